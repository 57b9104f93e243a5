namespace PgLlm.Failures;

/// <summary>A failed attempt, described for the job's error history.</summary>
internal sealed record Failure(FailureKind Kind, string Message, TimeSpan? RetryAfter);
