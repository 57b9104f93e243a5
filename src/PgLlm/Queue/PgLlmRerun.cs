using Npgsql;

namespace PgLlm.Queue;

/// <summary>
/// Re-runs of a task's stale (or never-filled) rows at low priority (<c>llm.job.priority</c> 1: live work is always
/// claimed first), as <c>pgllm rerun</c> drives them: a run (<c>llm.run</c>) lists its rows when it starts
/// (<c>llm.plan_rows</c>, optionally a deterministic sample), enqueues them in chunks
/// (<see cref="EnqueueAsync"/>, resumable: the run records how far it got) and its progress and spend are read from
/// its jobs (<see cref="ProgressAsync"/>).
/// </summary>
public sealed class PgLlmRerun
{
    private const string ProgressSql =
        "SELECT r.id, r.rows, r.position, r.enqueued, r.skipped, p.pending, p.running, p.succeeded, p.failed, p.other, " +
        "p.input_tokens, p.output_tokens, p.spent, r.max_cost FROM llm.run AS r CROSS JOIN LATERAL llm.run_progress(r.id) AS p WHERE r.id = $1";

    private readonly NpgsqlDataSource _dataSource;

    /// <summary>Creates the handle.</summary>
    public PgLlmRerun(NpgsqlDataSource dataSource)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        _dataSource = dataSource;
    }

    /// <summary>
    /// Whether a run this handle starts (or resumes) sends its jobs to the batch tier (the provider's Batch API, at batch
    /// prices, within its completion window) rather than the normal path at low priority.
    /// </summary>
    public bool BatchTier { get; init; }

    /// <summary>
    /// The rows a re-run would select (<c>llm.run_select</c>): <paramref name="which"/> is <c>stale</c> or
    /// <c>never_filled</c>; <paramref name="sample"/> keeps the first N rows of the deterministic order (the MD5 of the
    /// row key), <paramref name="percent"/> each row whose place in that order falls in the first P%.
    /// </summary>
    public async Task<long> CountAsync(string task, string which, long? sample, decimal? percent, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT count(*) FROM llm.run_select($1, $2, $3, $4)");
        AddSelection(command, task, which, sample, percent);
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>
    /// The unfinished re-run with this selection (resumed; its cap becomes <paramref name="maxCost"/>), else a new one
    /// with its rows listed now (<c>llm.run_start</c>). Returns the run's id.
    /// </summary>
    public async Task<long> StartAsync(string task, string which, long? sample, decimal? percent, decimal? maxCost, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.run_start($1, $2, $3, $4, $5, $6)");
        AddSelection(command, task, which, sample, percent);
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)maxCost ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = BatchTier ? "batch" : "live" });
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>Enqueues the run's next <paramref name="limit"/> rows at priority 1 (<c>llm.run_enqueue</c>); returns the jobs enqueued.</summary>
    public async Task<int> EnqueueAsync(long run, int limit, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT enqueued FROM llm.run_enqueue($1, $2)");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = run });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = limit });
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>The run's progress and spend (one indexed query over its jobs).</summary>
    public async Task<PgLlmRunProgress> ProgressAsync(long run, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand(ProgressSql);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = run });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            throw new InvalidOperationException($"there is no run {run}");
        }

        return new PgLlmRunProgress(
            reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4),
            reader.GetInt64(5), reader.GetInt64(6), reader.GetInt64(7), reader.GetInt64(8), reader.GetInt64(9),
            reader.GetInt64(10), reader.GetInt64(11),
            reader.IsDBNull(12) ? null : reader.GetDecimal(12),
            reader.IsDBNull(13) ? null : reader.GetDecimal(13));
    }

    /// <summary>
    /// What one job of the run is expected to cost (<c>llm.run_job_cost</c>): the average of its own answered jobs,
    /// else of the task's latest answered ones at today's prices; null when neither is known. Jobs: how many the
    /// average is of.
    /// </summary>
    public async Task<(decimal? Cost, long Jobs)> JobCostAsync(long? run, string task, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT cost, jobs FROM llm.run_job_cost($1, $2)");
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)run ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (reader.IsDBNull(0) ? null : reader.GetDecimal(0), reader.IsDBNull(1) ? 0 : reader.GetInt64(1));
    }

    /// <summary>Marks the run finished (<c>llm.run_finish</c>) with its <paramref name="outcome"/>; its pending jobs run on.</summary>
    public async Task FinishAsync(long run, string outcome, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.run_finish($1, $2)");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = run });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = outcome });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static void AddSelection(NpgsqlCommand command, string task, string which, long? sample, decimal? percent)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(which);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = which });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)sample ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)percent ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
    }
}
