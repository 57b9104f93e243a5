using Npgsql;

namespace PgLlm.Observability;

/// <summary>
/// One batch of the batch tier (table <c>llm.batch</c>): jobs sent together through the provider's Batch API.
/// </summary>
/// <param name="Id">PgLlm's id of the batch (what <c>pgllm batch cancel</c> takes).</param>
/// <param name="Endpoint">The endpoint it was sent to: <c>default</c>, or a name under <c>PgLlm:Endpoints</c>.</param>
/// <param name="Model">The model its lines ask.</param>
/// <param name="State">
/// <c>preparing</c>, <c>uploading</c>, <c>uploaded</c>, <c>submitted</c> (in flight at the provider), <c>settling</c>, then
/// <c>done</c>, <c>expired</c>, <c>cancelled</c> or <c>failed</c>.
/// </param>
/// <param name="ProviderStatus">The provider's last reported status (<c>validating</c>, <c>in_progress</c>, <c>finalizing</c>, ...), or null.</param>
/// <param name="Lines">Request lines (jobs) in it.</param>
/// <param name="Succeeded">Lines answered and settled.</param>
/// <param name="Failed">Lines the provider failed (retried as failed attempts).</param>
/// <param name="Missing">Lines missing from a completed batch's files (retried as failed attempts).</param>
/// <param name="CreatedAt">When its jobs were taken.</param>
/// <param name="SubmittedAt">When the provider accepted it; null before.</param>
/// <param name="ExpectedBy">The end of its completion window (the provider's <c>expires_at</c>); null before it was submitted.</param>
/// <param name="FinishedAt">When it ended; null while open.</param>
/// <param name="CancelRequested">Whether a cancel was asked for (<c>pgllm batch cancel</c>, <c>llm.batch_cancel</c>).</param>
/// <param name="Error">The last error of a step, or the provider's reason for a failed batch.</param>
public sealed record BatchStatus(
    long Id, string Endpoint, string Model, string State, string? ProviderStatus, int Lines, int Succeeded, int Failed, int Missing,
    DateTimeOffset CreatedAt, DateTimeOffset? SubmittedAt, DateTimeOffset? ExpectedBy, DateTimeOffset? FinishedAt, bool CancelRequested, string? Error)
{
    /// <summary>Whether the batch is still open (not done, expired, cancelled or failed).</summary>
    public bool Open => FinishedAt is null;

    /// <summary>The batches in flight and those finished in the last day (<c>llm.batch_status()</c>); empty before the batch tier's queue step.</summary>
    public static async Task<IReadOnlyList<BatchStatus>> ReadAllAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var all = new List<BatchStatus>();
        try
        {
            await using var command = dataSource.CreateCommand(
                "SELECT id, endpoint, model, state, provider_status, lines, succeeded, failed, missing, created_at, submitted_at, expected_by, " +
                "finished_at, cancel_requested, error FROM llm.batch_status()");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                all.Add(new BatchStatus(
                    reader.GetInt64(0), reader.GetString(1) is { Length: > 0 } endpoint ? endpoint : EndpointStatus.DefaultEndpoint, reader.GetString(2),
                    reader.GetString(3), reader.IsDBNull(4) ? null : reader.GetString(4), reader.GetInt32(5), reader.GetInt32(6), reader.GetInt32(7),
                    reader.GetInt32(8), reader.GetFieldValue<DateTimeOffset>(9), Time(reader, 10), Time(reader, 11), Time(reader, 12),
                    reader.GetBoolean(13), reader.IsDBNull(14) ? null : reader.GetString(14)));
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedFunction or PostgresErrorCodes.InsufficientPrivilege)
        {
            // The queue predates the batch tier, or the role may not read it: nothing to show.
        }

        return all;
    }

    /// <summary>
    /// Asks for a batch to be cancelled (<c>llm.batch_cancel</c>): a worker cancels it at the provider, writes what was answered
    /// and gives the other jobs back to pending, their attempt not spent. Returns the batch's state; null when there is no such batch.
    /// </summary>
    public static async Task<string?> CancelAsync(NpgsqlDataSource dataSource, long id, string? by = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT llm.batch_cancel($1, $2)");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)by ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        try
        {
            return (string?)await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.NoDataFound)
        {
            return null;
        }
    }

    private static DateTimeOffset? Time(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetFieldValue<DateTimeOffset>(ordinal);
}
