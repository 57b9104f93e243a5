using Npgsql;
using NpgsqlTypes;
using PgLlm.Queue;

namespace PgLlm.Batches;

/// <summary>A row of <c>llm.batch</c>, as the batch worker moves it on.</summary>
internal sealed record BatchRow(
    long Id, string Endpoint, string Model, string State, Guid Token, string? InputFileId, string? ProviderBatchId, DateTimeOffset? CancelRequestedAt)
{
    /// <summary>The name of the batch's input file at the provider.</summary>
    public string FileName => BatchApiClient.FileNameOf(Token);
}

/// <summary>The batch tier's statements on <c>llm.batch</c> and the jobs a batch holds (queue step 13's functions).</summary>
internal sealed class BatchStore(NpgsqlDataSource dataSource, string workerId)
{
    /// <summary>Jobs read at a time while a batch's lines are written.</summary>
    public const int JobPage = 2000;

    /// <summary>Starts a batch of <paramref name="tasks"/>' waiting jobs when it is time (see <c>llm.batch_take</c>); its id, or null.</summary>
    public async Task<long?> TakeAsync(string? endpoint, string model, string[] tasks, PgLlmBatchOptions options, TimeSpan batchLease, bool now, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT llm.batch_take($1, $2, $3, $4, $5, $6, $7, $8, $9)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = workerId });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = endpoint ?? string.Empty });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = model });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tasks });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = options.MaxLines });
        command.Parameters.Add(new NpgsqlParameter<double> { TypedValue = options.MaxWait.TotalSeconds });
        command.Parameters.Add(new NpgsqlParameter<double> { TypedValue = options.JobLease.TotalSeconds });
        command.Parameters.Add(new NpgsqlParameter<double> { TypedValue = batchLease.TotalSeconds });
        command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = now });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long id ? id : null;
    }

    /// <summary>The open batches this worker moves on now (its own, and those whose worker's lease ran out), leased to it.</summary>
    public async Task<List<BatchRow>> LeaseAsync(TimeSpan lease, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand($"SELECT {RowColumns} FROM llm.batch_lease($1, $2) ORDER BY id");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = workerId });
        command.Parameters.Add(new NpgsqlParameter<double> { TypedValue = lease.TotalSeconds });
        return await ReadRowsAsync(command, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A batch this worker has just taken (and holds the lease of).</summary>
    public async Task<BatchRow> ReadAsync(long id, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand($"SELECT {RowColumns} FROM llm.batch WHERE id = $1");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
        return (await ReadRowsAsync(command, cancellationToken).ConfigureAwait(false)).Single();
    }

    private const string RowColumns = "id, endpoint, model, state, token, input_file_id, provider_batch_id, cancel_requested_at";

    private static async Task<List<BatchRow>> ReadRowsAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        var rows = new List<BatchRow>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(new BatchRow(
                reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetGuid(4),
                reader.IsDBNull(5) ? null : reader.GetString(5), reader.IsDBNull(6) ? null : reader.GetString(6),
                reader.IsDBNull(7) ? null : reader.GetFieldValue<DateTimeOffset>(7)));
        }

        return rows;
    }

    /// <summary>Lets go of this worker's open batches (a graceful stop); quietly, when the database cannot be reached.</summary>
    public async Task LetGoAsync()
    {
        try
        {
            await using var command = dataSource.CreateCommand("SELECT llm.batch_let_go($1)");
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = workerId });
            await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException || Worker.DatabaseFault.IsConnectionFault(ex))
        {
            // Their lease runs out instead.
        }
    }

    /// <summary>Records a batch's step (<c>llm.batch_step</c>); fields left null stay as they are.</summary>
    public async Task StepAsync(
        long batch, string state, string? inputFileId = null, string? providerBatchId = null, string? providerStatus = null, long? bytes = null,
        DateTimeOffset? expectedBy = null, string? error = null, CancellationToken cancellationToken = default)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT llm.batch_step($1, $2, $3, p_input_file_id => $4, p_provider_batch_id => $5, p_provider_status => $6, p_bytes => $7, p_expected_by => $8, p_error => $9)");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = batch });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = workerId });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = state });
        command.Parameters.Add(Text(inputFileId));
        command.Parameters.Add(Text(providerBatchId));
        command.Parameters.Add(Text(providerStatus));
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)bytes ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)expectedBy ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        command.Parameters.Add(Text(error));
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Ends a batch (<c>llm.batch_finish</c>): the jobs it still holds are given back or failed; the lines missing.</summary>
    public async Task<int> FinishAsync(long batch, string outcome, int maxTries, int succeeded, int failed, string? error, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT llm.batch_finish($1, $2, $3, $4, $5, $6, $7)");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = batch });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = workerId });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = outcome });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = maxTries });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = succeeded });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = failed });
        command.Parameters.Add(Text(error));
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>The next page of jobs the batch holds, after job <paramref name="afterId"/>, in id order.</summary>
    public async Task<List<ClaimedJob>> JobsAsync(long batch, long afterId, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT id, task, attempt, max_attempts FROM llm.job " +
            "WHERE batch_id = $1 AND state = 'running' AND locked_by = 'pgllm-batch-' || $1 AND id > $2 ORDER BY id LIMIT " + JobPage);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = batch });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = afterId });
        var jobs = new List<ClaimedJob>(JobPage);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            jobs.Add(new ClaimedJob(reader.GetInt64(0), reader.GetString(1), reader.GetInt32(2), reader.GetInt32(3)));
        }

        return jobs;
    }

    /// <summary>Whether the batch tier has anything to do: an open batch, or a waiting job (ready now or after its retry's wait).</summary>
    public async Task<bool> AnyWorkAsync(CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT EXISTS (SELECT 1 FROM llm.batch WHERE state NOT IN ('done', 'failed', 'expired', 'cancelled')) " +
            "OR EXISTS (SELECT 1 FROM llm.job WHERE state = 'pending' AND priority = 2 " +
            "AND task <> ALL (coalesce(llm.paused_except(NULL), '{}')))");
        return (bool)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private static NpgsqlParameter Text(string? value) => new() { Value = (object?)value ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text };
}
