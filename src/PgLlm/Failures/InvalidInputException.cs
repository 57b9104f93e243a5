namespace PgLlm.Failures;

/// <summary>The row's data could not be turned into a prompt (e.g. an image column holds no image). Retrying cannot help.</summary>
internal sealed class InvalidInputException(string message) : Exception(message);
