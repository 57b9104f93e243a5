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
        }

        return all;
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
