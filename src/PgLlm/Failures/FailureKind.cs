namespace PgLlm.Failures;

/// <summary>What made an attempt fail, which decides whether and when it is retried (see llm.fail).</summary>
internal enum FailureKind
{
    /// <summary>Timeouts, connection errors, HTTP 408/429/5xx: retried until max attempts.</summary>
    Transient,

    /// <summary>The answer did not parse or did not fit the columns: retried a few times only.</summary>
    Invalid,

    /// <summary>Other HTTP 4xx: retrying cannot help.</summary>
    Permanent,
}
