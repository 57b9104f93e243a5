namespace PgLlm.Observability;

/// <summary>
/// One of an endpoint's rate limits as the workers of the database share it (table <c>llm.endpoint_bucket</c>):
/// the limit they were configured with, and what they were granted in about the last minute.
/// </summary>
/// <param name="Kind"><c>requests</c> or <c>tokens</c>.</param>
/// <param name="PerMinute">The limit per minute, as the worker that last took from it was configured.</param>
/// <param name="UsedLastMinute">Permits granted to the workers in about the last 60 seconds (tokens: settled with what the calls used).</param>
public sealed record EndpointRateLimit(string Kind, int PerMinute, long UsedLastMinute);
