namespace PgLlm.Failures;

/// <summary>The model answered, but not with what the task's schema asks for. Nothing is written.</summary>
internal sealed class InvalidAnswerException(string message) : Exception(message);
