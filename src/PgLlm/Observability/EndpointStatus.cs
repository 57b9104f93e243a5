using Npgsql;

namespace PgLlm.Observability;

/// <summary>
/// One model endpoint's state in the endpoint governor (table <c>llm.endpoint_state</c>), shared by every worker of the database.
/// </summary>
/// <param name="Endpoint">The endpoint's name: <c>default</c>, or a name under <c>PgLlm:Endpoints</c>.</param>
/// <param name="State"><c>closed</c> (calls flow), <c>open</c> (circuit breaker: jobs wait, probes test it) or <c>stopped</c> (auth or quota: jobs wait until resumed).</param>
/// <param name="Reason">Why it is in that state (the provider's message, key redacted), or null.</param>
/// <param name="Since">When it entered the state.</param>
/// <param name="ConsecutiveFailures">Failed calls in a row, counted toward opening the breaker.</param>
/// <param name="NextProbeAt">When an open endpoint is probed next; null otherwise.</param>
public sealed record EndpointStatus(string Endpoint, string State, string? Reason, DateTimeOffset Since, int ConsecutiveFailures, DateTimeOffset? NextProbeAt)
{
    /// <summary>The name of the unnamed endpoint (<c>PgLlm:BaseUrl</c>, <c>PgLlm:ApiKey</c>, <c>PgLlm:Model</c>).</summary>
    public const string DefaultEndpoint = "default";

    /// <summary>The endpoint's rate limits shared by the workers, with their use in the last minute; empty when none is configured (or none was used yet).</summary>
    public IReadOnlyList<EndpointRateLimit> RateLimits { get; init; } = [];

    /// <summary>Until when every worker's calls of the endpoint wait after a 429; null when they do not.</summary>
    public DateTimeOffset? PausedUntil { get; init; }

    /// <summary>Every endpoint's state; empty when no worker has run yet or the queue predates the governor.</summary>
    public static async Task<IReadOnlyList<EndpointStatus>> ReadAllAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var all = new List<EndpointStatus>();
        try
        {
            await using var command = dataSource.CreateCommand(
                "SELECT endpoint, state, reason, since, failures, next_probe_at FROM llm.endpoint_state ORDER BY endpoint");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                all.Add(new EndpointStatus(
                    reader.GetString(0),
                    reader.GetString(1),
                    reader.IsDBNull(2) ? null : reader.GetString(2),
                    reader.GetFieldValue<DateTimeOffset>(3),
                    reader.GetInt32(4),
                    reader.IsDBNull(5) ? null : reader.GetFieldValue<DateTimeOffset>(5)));
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InsufficientPrivilege)
        {
            // The queue predates the governor, or the role may not read it: nothing to show.
            return all;
        }

        return await WithRateLimitsAsync(dataSource, all, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The endpoints with their shared rate limits and pauses (migration 0006), as far as the queue has them.</summary>
    private static async Task<IReadOnlyList<EndpointStatus>> WithRateLimitsAsync(NpgsqlDataSource dataSource, List<EndpointStatus> all, CancellationToken cancellationToken)
    {
        var limits = new Dictionary<string, List<EndpointRateLimit>>(StringComparer.Ordinal);
        var paused = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        try
        {
            await using var command = dataSource.CreateCommand(
                "SELECT endpoint, kind, per_minute, used_last_minute, NULL::timestamptz FROM llm.endpoint_bucket_use " +
                "UNION ALL SELECT endpoint, NULL, NULL, NULL, paused_until FROM llm.endpoint_state WHERE paused_until > clock_timestamp() ORDER BY 1, 2");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var endpoint = reader.GetString(0);
                if (!reader.IsDBNull(4))
                {
                    paused[endpoint] = reader.GetFieldValue<DateTimeOffset>(4);
                    continue;
                }

                (limits.TryGetValue(endpoint, out var list) ? list : limits[endpoint] = [])
                    .Add(new EndpointRateLimit(reader.GetString(1), reader.GetInt32(2), reader.GetInt64(3)));
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.UndefinedColumn or PostgresErrorCodes.InsufficientPrivilege)
        {
            // The queue predates shared rate limits: the states alone.
            return all;
        }

        return all.Select(e => e with
        {
            RateLimits = limits.TryGetValue(e.Endpoint, out var list) ? list : [],
            PausedUntil = paused.TryGetValue(e.Endpoint, out var until) ? until : null,
        }).ToList();
    }

    /// <summary>Ends a stop (or an open breaker) by hand; the state it left, or null when no endpoint has that name.</summary>
    public static async Task<string?> ResumeAsync(NpgsqlDataSource dataSource, string endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT llm.endpoint_resume($1)");
        command.Parameters.Add(new NpgsqlParameter { Value = endpoint });
        var result = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        return result as string;
    }
}
