using Npgsql;

namespace PgLlm.Queue;

/// <summary>What one batch of a backfill did, and the backfill's totals so far.</summary>
/// <param name="Scanned">Rows this batch looked at.</param>
/// <param name="Enqueued">Jobs this batch enqueued.</param>
/// <param name="TotalScanned">Rows looked at since the backfill started (across interruptions).</param>
/// <param name="TotalEnqueued">Jobs enqueued since the backfill started.</param>
/// <param name="Done">Whether the last row was reached.</param>
public sealed record PgLlmBackfillBatch(int Scanned, int Enqueued, long TotalScanned, long TotalEnqueued, bool Done);

/// <summary>
/// Enqueues jobs for rows that already exist (rows inserted before the task was declared, or whose
/// answers were cleared), in batches, resumable after an interruption: the SQL function
/// <c>llm.backfill</c> records its position in <c>llm.backfill</c> with every batch.
/// </summary>
public sealed class PgLlmBackfill
{
    private readonly NpgsqlDataSource _dataSource;

    /// <summary>Creates the backfill handle.</summary>
    public PgLlmBackfill(NpgsqlDataSource dataSource)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        _dataSource = dataSource;
    }

    /// <summary>
    /// Whether the jobs go to the batch tier (answered through the provider's Batch API at batch prices, within its
    /// completion window) rather than the normal path at low priority. Applies from the next batch of rows on.
    /// </summary>
    public bool BatchTier { get; init; }

    /// <summary>
    /// Runs one batch of the backfill of <paramref name="task"/>: the next <paramref name="batchSize"/> rows in key
    /// order after where the last batch stopped. <paramref name="onlyEmpty"/> enqueues only rows where a target
    /// column is null; otherwise every row whose read columns are non-null. <paramref name="restart"/> starts over.
    /// </summary>
    /// <exception cref="PostgresException">The task is unknown (SQLSTATE 22023).</exception>
    public async Task<PgLlmBackfillBatch> RunBatchAsync(string task, bool onlyEmpty = true, int batchSize = 1000, bool restart = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(task);
        await using var command = _dataSource.CreateCommand("SELECT scanned, enqueued, total_scanned, total_enqueued, done FROM llm.backfill($1, $2, $3, $4, $5)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = onlyEmpty });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = batchSize });
        command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = restart });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = BatchTier ? "batch" : "live" });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new PgLlmBackfillBatch(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetBoolean(4));
    }

    /// <summary>
    /// Runs batches until the last row, reporting each one. Cancelling stops between batches (a batch is one
    /// transaction); calling again with the same <paramref name="onlyEmpty"/> resumes where it stopped.
    /// </summary>
    public async Task<PgLlmBackfillBatch> RunAsync(string task, bool onlyEmpty = true, int batchSize = 1000, bool restart = false, IProgress<PgLlmBackfillBatch>? progress = null, CancellationToken cancellationToken = default)
    {
        var batch = await RunBatchAsync(task, onlyEmpty, batchSize, restart, cancellationToken).ConfigureAwait(false);
        progress?.Report(batch);
        while (!batch.Done)
        {
            cancellationToken.ThrowIfCancellationRequested();
            batch = await RunBatchAsync(task, onlyEmpty, batchSize, false, cancellationToken).ConfigureAwait(false);
            progress?.Report(batch);
        }

        return batch;
    }

    /// <summary>The number of rows in <paramref name="task"/>'s table (for progress); null when the task is unknown.</summary>
    public async Task<long?> CountRowsAsync(string task, CancellationToken cancellationToken = default)
    {
        // The table name comes from the registry, which only migrations write, quoted by format('%I').
        await using var find = _dataSource.CreateCommand("SELECT format('SELECT count(*) FROM %I.%I', table_schema, table_name) FROM llm.task WHERE name = $1");
        find.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        if (await find.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is not string sql)
        {
            return null;
        }

        await using var count = _dataSource.CreateCommand(sql);
        return (long)(await count.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }
}
