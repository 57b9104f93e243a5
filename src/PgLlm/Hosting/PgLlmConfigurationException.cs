namespace PgLlm.Hosting;

/// <summary>
/// A setting PgLlm cannot work with: a missing or unreadable connection string, a bad endpoint URL. Its message is
/// one line that names the setting and never contains a password or an API key. A host started with
/// <see cref="PgLlmServiceCollectionExtensions.AddPgLlm"/> logs it as one critical line and exits with
/// <see cref="PgLlmServiceCollectionExtensions.StartFailedExitCode"/> instead of throwing it.
/// </summary>
public sealed class PgLlmConfigurationException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public PgLlmConfigurationException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
