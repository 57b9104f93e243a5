using System.Text.Json;
using Npgsql;
using NpgsqlTypes;
using PgLlm.Completions;
using PgLlm.Failures;

namespace PgLlm.Queue;

/// <summary>A job the worker claimed: its attempt is already counted.</summary>
internal sealed record ClaimedJob(long Id, string Task, int Attempt, int MaxAttempts);

/// <summary>
/// Which tasks a claim may take: only those in <see cref="Only"/> (when set) and none in <see cref="Except"/>
/// (when set). <see cref="Any"/> takes every task.
/// </summary>
internal sealed record TaskFilter(string[]? Only, string[]? Except)
{
    public static readonly TaskFilter Any = new(null, null);
}

/// <summary>
/// A claimed job with its inputs: none when the row is gone or a required input is null, or when they
/// could not be read (<paramref name="InputsError"/>), or when its table is not as its task expects
/// (<paramref name="TableProblem"/>, the table check's lines: the job fails for good without a model call).
/// </summary>
internal sealed record ClaimedWork(ClaimedJob Job, JobInputs? Inputs, string? InputsError, string? TableProblem = null);

/// <summary>
/// A model's answer to write back to a job's row, with what the stale-write check compares and what the job's answer
/// record keeps: the call's tokens, the model that answered and whether the answer cache did.
/// </summary>
internal sealed record WriteBack(
    TaskDefinition Task, ClaimedJob Job, string InputsHash, string ResultJson, int? InputTokens, int? OutputTokens, string? Model = null, bool CacheHit = false)
{
    /// <summary>The call's usage, counted in the job's should the write-back fail.</summary>
    public ModelUsage Usage => new(InputTokens, OutputTokens, Model, CacheHit);
}

/// <summary>One job's outcome in a batched write-back: its new state, or the error its own subtransaction raised.</summary>
internal sealed record BatchOutcome(long JobId, string? State, string? Error, string? ErrorCode);

/// <summary>The current values a job's prompt reads, and their hash for the stale-write check.</summary>
internal sealed record JobInputs(long JobId, JsonElement Values, string Hash);

/// <summary>
/// Every statement the worker runs against the queue. Each is one short implicit transaction:
/// nothing here is ever open while a model is being called.
/// </summary>
internal sealed class JobQueue : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly SemaphoreSlim _claimLock = new(1, 1);
    private readonly KeptConnection _claimConnection;
    private NpgsqlCommand? _claimCommand;
    private NpgsqlCommand? _budgetedClaimCommand;

    /// <summary>The statement that marks a session as the batch tier's: its settlements price tokens at batch prices (llm.task_price).</summary>
    private const string BatchTierSetting = "SELECT set_config('pgllm.price_tier', 'batch', false)";

    private readonly bool _batchTier;

    /// <param name="dataSource">The database.</param>
    /// <param name="time">The table check's clock.</param>
    /// <param name="batchTier">Settles the batch tier's answers: their tokens are priced at batch prices.</param>
    public JobQueue(NpgsqlDataSource dataSource, TimeProvider? time = null, bool batchTier = false)
    {
        _dataSource = dataSource;
        _batchTier = batchTier;
        _claimConnection = new KeptConnection(dataSource);
        Tables = new TableGate(time ?? TimeProvider.System);
    }

    /// <summary>The table check between a claim and its model calls (also asked again when a write-back fails for a schema reason).</summary>
    public TableGate Tables { get; }

    public void Dispose()
    {
        _claimCommand?.Dispose();
        _budgetedClaimCommand?.Dispose();
        _claimConnection.Dispose();
        _claimLock.Dispose();
    }

    /// <summary>
    /// Claims up to <paramref name="limit"/> jobs (<c>llm.claim</c>; the attempt is counted and committed with
    /// the claim), then reads the current values their prompts read with each task's generated inputs
    /// function, called directly (a dispatch in SQL, an <c>EXECUTE</c> planned at every call in a
    /// subtransaction, cost about 0.4 ms of a 1.3 ms claim). <paramref name="filter"/> limits the claim to some tasks (<see cref="TaskFilter.Any"/>: every
    /// task); <paramref name="findTask"/> names each task's inputs function (the registry).
    /// Claims run on a connection of their own with the statements prepared: a pooled connection is reset
    /// (<c>DISCARD ALL</c>) each time it returns to the pool, which drops every plan the session cached,
    /// so each claim was planned again from scratch (about 1 ms of the pickup path). One claim at a time.
    /// With <paramref name="budgetEndpoint"/> (daily budgets exist: the lane's endpoint), the same statement calls
    /// <c>llm.claim_budgeted</c> instead, which admits and reserves against the budgets in the same round trip.
    /// Without it, at most <paramref name="lowLimit"/> (default: all) of the jobs may be re-run or backfill jobs
    /// (priority above 0); live jobs are taken first either way.
    /// </summary>
    public async Task<IReadOnlyList<ClaimedWork>> ClaimAsync(
        string workerId, int limit, TimeSpan lease, TaskFilter filter, Func<string, CancellationToken, ValueTask<TaskDefinition?>> findTask, CancellationToken cancellationToken,
        string? budgetEndpoint = null, int? lowLimit = null)
    {
        await _claimLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var connection = await _claimConnection.GetAsync(cancellationToken).ConfigureAwait(false);
            var command = budgetEndpoint is null
                ? (_claimCommand?.Connection == connection ? _claimCommand : await PrepareClaimAsync(connection, budgeted: false, cancellationToken).ConfigureAwait(false))
                : (_budgetedClaimCommand?.Connection == connection ? _budgetedClaimCommand : await PrepareClaimAsync(connection, budgeted: true, cancellationToken).ConfigureAwait(false));
            command.Parameters[0].Value = workerId;
            command.Parameters[1].Value = limit;
            command.Parameters[2].Value = lease.TotalSeconds;
            command.Parameters[3].Value = (object?)filter.Only ?? DBNull.Value;
            command.Parameters[4].Value = (object?)filter.Except ?? DBNull.Value;
            command.Parameters[5].Value = budgetEndpoint is null ? Math.Clamp(lowLimit ?? limit, 0, limit) : budgetEndpoint;

            var jobs = new List<ClaimedJob>(limit);
            await using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
            {
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    jobs.Add(new ClaimedJob(reader.GetInt64(0), reader.GetString(1), reader.GetInt32(2), reader.GetInt32(3)));
                }
            }

            // The claim is committed: its jobs are this worker's now, so their inputs are read to the end
            // (a short read), whatever the caller's token says.
            return await ReadClaimedAsync(connection, jobs, findTask).ConfigureAwait(false);
        }
        catch
        {
            // Broken, cancelled mid-statement or failed: start from a fresh connection next time.
            await _claimConnection.CloseAsync().ConfigureAwait(false);
            throw;
        }
        finally
        {
            _claimLock.Release();
        }
    }

    /// <summary>
    /// The claimed jobs with their inputs, read task by task; a chain's downstream jobs whose upstream has yet to settle
    /// are left out, given back to the queue unspent and uncalled (<see cref="HoldForUpstreamsAsync"/>).
    /// </summary>
    public async Task<IReadOnlyList<ClaimedWork>> ReadClaimedAsync(
        NpgsqlConnection connection, List<ClaimedJob> jobs, Func<string, CancellationToken, ValueTask<TaskDefinition?>> findTask)
    {
        var claimed = new List<ClaimedWork>(jobs.Count);
        foreach (var group in jobs.GroupBy(j => j.Task, StringComparer.Ordinal))
        {
            var waiting = await HoldForUpstreamsAsync(connection, group.Key, group, findTask).ConfigureAwait(false);
            var run = waiting is null ? group.ToList() : group.Where(j => !waiting.Contains(j.Id)).ToList();
            if (run.Count == 0)
            {
                continue;
            }

            var (inputs, error, problem) = await ReadInputsAsync(connection, group.Key, run.Select(j => j.Id).ToArray(), findTask).ConfigureAwait(false);
            foreach (var job in run)
            {
                claimed.Add(new ClaimedWork(job, error is null && problem is null ? inputs!.GetValueOrDefault(job.Id) : null, error, problem));
            }
        }

        return claimed;
    }

    /// <summary>
    /// For a task with upstreams (a chain's downstream, <see cref="TaskDefinition.After"/>): the claimed jobs whose row has an
    /// upstream job pending or running, which <c>llm.hold_for_upstreams</c> has given back to the queue without spending
    /// their attempt, to run once the upstream settled. Null, without a round trip, for every other task.
    /// </summary>
    private static async Task<HashSet<long>?> HoldForUpstreamsAsync(
        NpgsqlConnection connection, string taskName, IEnumerable<ClaimedJob> jobs, Func<string, CancellationToken, ValueTask<TaskDefinition?>> findTask)
    {
        var task = await findTask(taskName, CancellationToken.None).ConfigureAwait(false);
        if (task is null || task.After.Count == 0)
        {
            return null;
        }

        var list = jobs.ToList();
        await using var command = new NpgsqlCommand("SELECT llm.hold_for_upstreams($1, $2, $3)", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = taskName });
        command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = list.Select(j => j.Id).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = list.Select(j => j.Attempt).ToArray() });
        await command.PrepareAsync(CancellationToken.None).ConfigureAwait(false);
        var held = (long[])(await command.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false))!;
        return held.Length == 0 ? null : [.. held];
    }

    /// <summary>
    /// One task's claimed jobs' inputs, by its generated inputs function: none for a job whose row is gone
    /// or lacks an input; an error when they cannot be read; the table check's problem when the task's
    /// table is not as the task expects (checked first, from the gate's cached verdict, and again when the
    /// read fails for a schema reason).
    /// </summary>
    private async Task<(Dictionary<long, JobInputs>? Inputs, string? Error, string? TableProblem)> ReadInputsAsync(
        NpgsqlConnection connection, string taskName, long[] ids, Func<string, CancellationToken, ValueTask<TaskDefinition?>> findTask)
    {
        var task = await findTask(taskName, CancellationToken.None).ConfigureAwait(false);
        if (task is null)
        {
            return (null, $"task '{taskName.Replace("'", "''", StringComparison.Ordinal)}' is not in llm.task (removed from the declarations?)", null);
        }

        if (await Tables.ProblemAsync(connection, task, CancellationToken.None).ConfigureAwait(false) is { } problem)
        {
            return (null, null, problem);
        }

        try
        {
            await using var command = new NpgsqlCommand("SELECT job_id, inputs::text, inputs_hash FROM " + task.InputsFunction + "($1)", connection);
            command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = ids });
            // Prepared once per session and function: Npgsql finds it again by its text.
            await command.PrepareAsync(CancellationToken.None).ConfigureAwait(false);
            var inputs = new Dictionary<long, JobInputs>(ids.Length);
            await using var reader = await command.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            while (await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false))
            {
                var id = reader.GetInt64(0);
                using var document = JsonDocument.Parse(reader.GetString(1));
                inputs[id] = new JobInputs(id, document.RootElement.Clone(), reader.GetString(2));
            }

            return (inputs, null, null);
        }
        catch (PostgresException ex) when (connection.State == System.Data.ConnectionState.Open)
        {
            // The rows' own error. A server shutting down is reported the same way but breaks the connection:
            // that propagates (the claim loop backs off and reconnects; the jobs are rescued after their lease).
            if (TableGate.IsSchemaError(ex))
            {
                // A column or the table gone since the last check: the jobs fail for good with what to fix.
                Tables.Forget(task.Name);
                if (await Tables.ProblemAsync(connection, task, CancellationToken.None).ConfigureAwait(false) is { } drifted)
                {
                    return (null, null, drifted);
                }
            }

            return (null, "could not read the row: " + ex.MessageText, null);
        }
    }

    /// <summary>A command on <paramref name="connection"/>, or on a connection from the pool when null.</summary>
    private NpgsqlCommand Command(string sql, NpgsqlConnection? connection) =>
        connection is null ? _dataSource.CreateCommand(sql) : new NpgsqlCommand(sql, connection);

    /// <summary>A connection for a caller to keep across calls (so the session keeps its cached plans).</summary>
    public KeptConnection KeepConnection() => new(_dataSource, _batchTier ? BatchTierSetting : null);

    /// <summary>Closes the claims' own connection (the worker stops); the next claim opens a new one.</summary>
    public async Task CloseClaimConnectionAsync()
    {
        await _claimLock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await _claimConnection.CloseAsync().ConfigureAwait(false);
        }
        finally
        {
            _claimLock.Release();
        }
    }

    /// <summary>
    /// The claim statement (<c>llm.claim</c>, or <c>llm.claim_budgeted</c> when <paramref name="budgeted"/>), prepared on
    /// <paramref name="connection"/> (again after the connection was replaced).
    /// </summary>
    private async Task<NpgsqlCommand> PrepareClaimAsync(NpgsqlConnection connection, bool budgeted, CancellationToken cancellationToken)
    {
        if (budgeted)
        {
            _budgetedClaimCommand?.Dispose();
            _budgetedClaimCommand = null;
        }
        else
        {
            _claimCommand?.Dispose();
            _claimCommand = null;
        }

        // The claim commits without waiting for its WAL flush (see docs/queue.md): set in a subquery of its
        // own, before the commit.
        var command = new NpgsqlCommand(
            "SELECT c.id, c.task, c.attempt, c.max_attempts FROM (SELECT set_config('synchronous_commit', 'off', true) OFFSET 0) AS settings, " +
            (budgeted ? "llm.claim_budgeted($1, $2, $3, $4, $5, $6) AS c" : "llm.claim($1, $2, $3, $4, $5, $6) AS c"),
            connection);
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Integer });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Double });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        // The budgeted claim's endpoint, or the plain claim's most re-run and backfill jobs (see llm.claim).
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = budgeted ? NpgsqlDbType.Text : NpgsqlDbType.Integer });

        await command.PrepareAsync(cancellationToken).ConfigureAwait(false);
        if (budgeted)
        {
            _budgetedClaimCommand = command;
        }
        else
        {
            _claimCommand = command;
        }

        return command;
    }

    /// <summary>
    /// Writes the answer back (if the inputs are unchanged) and settles the job, in its own transaction,
    /// through the task's write-back function as a batch of one, with the answer's model and cache hit (which the
    /// job records). Returns its new state.
    /// </summary>
    public async Task<string> CompleteAsync(WriteBack write, CancellationToken cancellationToken, NpgsqlConnection? connection = null)
    {
        // Committed without waiting for the WAL flush, like the batched write-back. The settings' subquery is a
        // plan node of its own (OFFSET 0), evaluated before the function runs.
        var record = write.Task.WriteBackTakesRecord;
        await using var command = Command(
            "SELECT (" + write.Task.CompleteFunction + "(ARRAY[$1], ARRAY[$2], ARRAY[$3], ARRAY[$4], ARRAY[$5], ARRAY[$6]" +
            (record ? ", ARRAY[$7], ARRAY[$8]" : string.Empty) + "))[1] " +
            "FROM (SELECT set_config('synchronous_commit', 'off', true) OFFSET 0) AS settings",
            connection);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = write.Job.Id });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = write.Job.Attempt });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = write.InputsHash, NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = write.ResultJson, NpgsqlDbType = NpgsqlDbType.Jsonb });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)write.InputTokens ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Integer });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)write.OutputTokens ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Integer });
        if (record)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)write.Model ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = write.CacheHit });
        }

        return (string)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>
    /// Writes back several answers in one round trip and one commit: a batch of one task through its
    /// write-back function, called directly; otherwise (or should that call fail as a whole)
    /// <c>llm.complete_batch</c>, which gives each task's jobs, or each job, a subtransaction of its own, so
    /// each comes back with its own state, or its own error and SQLSTATE.
    /// </summary>
    public async Task<IReadOnlyList<BatchOutcome>> CompleteBatchAsync(IReadOnlyList<WriteBack> writes, CancellationToken cancellationToken, NpgsqlConnection? connection = null)
    {
        var count = writes.Count;
        var tasks = new string[count];
        var ids = new long[count];
        var attempts = new int[count];
        var hashes = new string[count];
        var results = new string[count];
        var inputTokens = new int?[count];
        var outputTokens = new int?[count];
        var models = new string?[count];
        var cacheHits = new bool[count];
        for (var i = 0; i < count; i++)
        {
            var write = writes[i];
            tasks[i] = write.Task.Name;
            ids[i] = write.Job.Id;
            attempts[i] = write.Job.Attempt;
            hashes[i] = write.InputsHash;
            results[i] = write.ResultJson;
            inputTokens[i] = write.InputTokens;
            outputTokens[i] = write.OutputTokens;
            models[i] = write.Model;
            cacheHits[i] = write.CacheHit;
        }

        if (OneTaskBatch(writes) is { } task)
        {
            try
            {
                return await CompleteOneTaskBatchAsync(task, ids, attempts, hashes, results, inputTokens, outputTokens, models, cacheHits, connection, cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException)
            {
                // Undone as a whole (a lock a user holds past the lock timeout, a value that does not
                // fit): llm.complete_batch below gives each job its own subtransaction and outcome.
            }
        }

        await using var command = Command("SELECT job_id, state, error, error_code FROM llm.complete_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)", connection);
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tasks });
        AddWriteBackArrays(command, ids, attempts, hashes, results, inputTokens, outputTokens);
        AddRecordArrays(command, models, cacheHits);
        var outcomes = new List<BatchOutcome>(count);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            outcomes.Add(new BatchOutcome(
                reader.GetInt64(0),
                reader.IsDBNull(1) ? null : reader.GetString(1),
                reader.IsDBNull(2) ? null : reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetString(3)));
        }

        return outcomes;
    }

    /// <summary>The write-back functions' six parallel arrays, in their parameter order (after the tasks, for llm.complete_batch).</summary>
    private static void AddWriteBackArrays(
        NpgsqlCommand command, long[] ids, int[] attempts, string[] hashes, string[] results, int?[] inputTokens, int?[] outputTokens)
    {
        command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = ids });
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = attempts });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = hashes });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = results, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb });
        command.Parameters.Add(new NpgsqlParameter<int?[]> { TypedValue = inputTokens });
        command.Parameters.Add(new NpgsqlParameter<int?[]> { TypedValue = outputTokens });
    }

    /// <summary>The answers' models and cache hits, which each job records: the write-back's last two arrays.</summary>
    private static void AddRecordArrays(NpgsqlCommand command, string?[] models, bool[] cacheHits)
    {
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = models, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<bool[]> { TypedValue = cacheHits });
    }

    /// <summary>The task when every write is of that one task.</summary>
    private static TaskDefinition? OneTaskBatch(IReadOnlyList<WriteBack> writes)
    {
        var task = writes.Count > 0 ? writes[0].Task : null;
        if (task is null)
        {
            return null;
        }

        for (var i = 1; i < writes.Count; i++)
        {
            if (writes[i].Task.Name != task.Name)
            {
                return null;
            }
        }

        return task;
    }

    /// <summary>
    /// A batch of one task's answers through the task's generated set-based function, called directly:
    /// what <c>llm.complete_batch</c> does for such a batch, without its dispatch (the registry lookup, the
    /// dynamic <c>EXECUTE</c> planned at every call, the subtransaction: about half a millisecond a batch).
    /// The same settings first: the write-back waits at most 20 ms for a row lock, and commits without
    /// waiting for its WAL flush. Throws <see cref="PostgresException"/> when the batch is undone as a whole.
    /// </summary>
    private async Task<IReadOnlyList<BatchOutcome>> CompleteOneTaskBatchAsync(
        TaskDefinition task, long[] ids, int[] attempts, string[] hashes, string[] results, int?[] inputTokens, int?[] outputTokens,
        string?[] models, bool[] cacheHits, NpgsqlConnection? connection, CancellationToken cancellationToken)
    {
        // The settings' subquery is a plan node of its own (OFFSET 0), evaluated before the function runs.
        var record = task.WriteBackTakesRecord;
        await using var command = Command(
            "SELECT " + task.CompleteFunction + "($1, $2, $3, $4, $5, $6" + (record ? ", $7, $8" : string.Empty) + ") " +
            "FROM (SELECT set_config('lock_timeout', '20ms', true), set_config('synchronous_commit', 'off', true) OFFSET 0) AS settings",
            connection);
        AddWriteBackArrays(command, ids, attempts, hashes, results, inputTokens, outputTokens);
        if (record)
        {
            AddRecordArrays(command, models, cacheHits);
        }
        if (connection is not null)
        {
            // Kept by the writer's session: parsed and planned once, not at every batch.
            await command.PrepareAsync(cancellationToken).ConfigureAwait(false);
        }

        var states = (string?[])(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        var outcomes = new List<BatchOutcome>(ids.Length);
        for (var i = 0; i < ids.Length; i++)
        {
            outcomes.Add(new BatchOutcome(ids[i], i < states.Length ? states[i] : null, null, null));
        }

        return outcomes;
    }

    /// <summary>
    /// Records a failed attempt: retried after <paramref name="retryIn"/> while the rules for its kind allow. When the
    /// model answered (<paramref name="usage"/>: an invalid answer, a write-back that failed), its tokens count in the job's.
    /// </summary>
    public async Task<string> FailAsync(ClaimedJob job, string error, TimeSpan retryIn, FailureKind kind, CancellationToken cancellationToken, ModelUsage? usage = null)
    {
        // The batch tier's answers are priced at batch prices: the setting is a plan node evaluated before the function.
        await using var command = _dataSource.CreateCommand(usage is null ? "SELECT llm.fail($1, $2, $3, $4, $5)"
            : "SELECT llm.fail($1, $2, $3, $4, $5, $6, $7, $8, $9)" + (_batchTier ? " FROM (SELECT set_config('pgllm.price_tier', 'batch', true) OFFSET 0) AS tier" : string.Empty));
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = job.Id });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = job.Attempt });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = error });
        command.Parameters.Add(new NpgsqlParameter<double> { TypedValue = retryIn.TotalSeconds });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = kind.ToSql() });
        if (usage is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)usage.InputTokens ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Integer });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)usage.OutputTokens ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Integer });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)usage.Model ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
            command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = usage.CacheHit });
        }

        return (string)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>Ends a job that has nothing to do (its row is gone, or its task was removed).</summary>
    public Task<string> SkipAsync(ClaimedJob job, string reason, CancellationToken cancellationToken) =>
        SettleAsync("SELECT llm.skip($1, $2, $3)", job, reason, cancellationToken);

    /// <summary>Gives a claimed job back without spending its attempt.</summary>
    public Task<string> ReleaseAsync(ClaimedJob job, CancellationToken cancellationToken) =>
        SettleAsync("SELECT llm.release($1, $2)", job, null, cancellationToken);

    /// <summary>Returns jobs whose worker's lease ran out to the queue; the number rescued.</summary>
    public async Task<int> RescueAsync(CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.rescue()");
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>Deletes finished history older than <paramref name="olderThan"/>; the number deleted.</summary>
    public async Task<int> PruneAsync(TimeSpan olderThan, CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.prune($1)");
        command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = olderThan });
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>
    /// Whether any job is running (held by a batch too: a batch may hand jobs back to the normal path), and how long until
    /// the next pending job the claim may take is due (null when none is pending): the batch tier's waiting jobs
    /// (priority 2) and a paused task's are left out, as the claim leaves them out.
    /// </summary>
    public async Task<(bool AnyRunning, TimeSpan? NextDue)> PeekAsync(CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand(
            "SELECT EXISTS (SELECT 1 FROM llm.job WHERE state = 'running'), " +
            "(SELECT extract(epoch FROM min(scheduled_at) - now())::float8 FROM llm.job " +
            "WHERE state = 'pending' AND priority < 2 AND task <> ALL (coalesce(llm.paused_except(NULL), '{}')))");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (reader.GetBoolean(0), reader.IsDBNull(1) ? null : TimeSpan.FromSeconds(Math.Max(0, reader.GetDouble(1))));
    }

    private async Task<string> SettleAsync(string sql, ClaimedJob job, string? reason, CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand(sql);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = job.Id });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = job.Attempt });
        if (reason is not null)
        {
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = reason });
        }

        return (string)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }
}
