using Npgsql;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Tests.Integration;

/// <summary>
/// The throughput mechanisms keep the queue's guarantees: batched write-backs stay independent per
/// job, and enqueuers notify exactly when a worker sleeps.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class WakeAndBatchTests
{
    /// <summary>The middle answer breaks a CHECK constraint the test adds.</summary>
    private static readonly string[] Answers = ["{\"output\":\"one\"}", "{\"output\":\"bad\"}", "{\"output\":\"three\"}"];

    private readonly PgLlmFixture _fixture;

    public WakeAndBatchTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task One_failing_job_in_a_batched_write_back_undoes_nothing_of_the_others()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky ADD CONSTRAINT output_not_bad CHECK (output <> 'bad')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c')");
        var claimed = await db.ListAsync<string[]>(
            "SELECT ARRAY[c.id::text, c.task, c.attempt::text, i.inputs_hash] FROM llm.claim('test', 10, 60) AS c " +
            "CROSS JOIN LATERAL \"llm\".\"public.flaky:output:inputs\"(ARRAY[c.id]) AS i ORDER BY c.id");
        Assert.Equal(3, claimed.Count);

        await using var command = db.CreateCommand(
            "SELECT job_id, state, error_code FROM llm.complete_batch($1, $2, $3, $4, $5::jsonb[], NULL, NULL) ORDER BY job_id");
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => c[1]).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => long.Parse(c[0], System.Globalization.CultureInfo.InvariantCulture)).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => int.Parse(c[2], System.Globalization.CultureInfo.InvariantCulture)).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => c[3]).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = Answers });
        var outcomes = new List<(long Id, string? State, string? Code)>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                outcomes.Add((reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2)));
            }
        }

        Assert.Equal(["succeeded", null, "succeeded"], outcomes.Select(o => o.State));
        Assert.Equal("23514", outcomes[1].Code);
        Assert.Equal(["one", null, "three"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
        Assert.Equal(["succeeded", "running", "succeeded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));
    }

    [Fact]
    public async Task A_set_based_write_back_gives_each_job_the_outcome_it_would_get_alone_in_the_order_given()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')");
        var first = await ClaimAsync(db);
        Assert.Equal(5, first.Count);

        // Row 2's input changes while the model answers; row 3 is deleted; job 4 is rescued and claimed
        // again (its first attempt is lost). Row 5 gets a second running job reading the same input
        // again (changed and changed back), so both of its jobs answer the same values.
        await db.ExecAsync("UPDATE flaky SET input = 'b2' WHERE id = 2");
        await db.ExecAsync("DELETE FROM flaky WHERE id = 3");
        await db.ExecAsync($"UPDATE llm.job SET state = 'pending', scheduled_at = now() WHERE id = {first[3].Id}");
        await db.ExecAsync("UPDATE flaky SET input = 'e2' WHERE id = 5");
        await db.ExecAsync("UPDATE flaky SET input = 'e' WHERE id = 5");
        var again = await ClaimAsync(db);
        var job4 = Assert.Single(again, c => c.Id == first[3].Id);
        var job5b = Assert.Single(again, c => c.Id != first[3].Id && c.Id > first[4].Id && c.Hash == first[4].Hash);

        // Out of id order on purpose: the outcomes come back in the order given.
        (Claimed Job, string Answer)[] batch =
        [
            (job5b, "{\"output\":\"E second\"}"), (first[2], "{\"output\":\"C\"}"), (first[0], "{\"output\":\"A\"}"),
            (first[3], "{\"output\":\"D stale\"}"), (first[1], "{\"output\":\"B\"}"), (first[4], "{\"output\":\"E first\"}"),
            (job4, "{\"output\":\"D\"}"),
        ];
        // The task's write-back function itself (through llm.complete_batch, an error in it would be
        // hidden by the job-by-job fallback, which gives the same outcomes).
        var function = await db.ScalarAsync<string>("SELECT complete_function::text FROM llm.task WHERE name = 'public.flaky:output'");
        await using var command = db.CreateCommand($"SELECT {function}($1, $2, $3, $4::jsonb[], $5, $6)");
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(b => b.Job.Id).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(b => b.Job.Attempt).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(b => b.Job.Hash).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(b => b.Answer).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(_ => 5).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = batch.Select(_ => 7).ToArray() });
        var states = (string[])(await command.ExecuteScalarAsync())!;

        Assert.Equal(["succeeded", "skipped", "succeeded", "lost", "superseded", "succeeded", "succeeded"], states);
        Assert.Equal(["A", null, "D", "E first"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
        // The superseded row's newer input keeps its one job (enqueued by the user's update, claimed since).
        Assert.Equal(1, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running') AND row_key = '{\"id\": 2}'"));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running') AND row_key <> '{\"id\": 2}'"));
        Assert.Equal("succeeded|5|7", await db.ScalarAsync<string>(
            $"SELECT state || '|' || input_tokens || '|' || output_tokens FROM llm.job WHERE id = {first[0].Id}"));
    }

    [Fact]
    public async Task A_batch_whose_set_based_write_fails_is_written_job_by_job()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky ADD CONSTRAINT output_not_bad CHECK (output <> 'bad')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        var jobs = await ClaimAsync(db);
        await db.ExecAsync("DELETE FROM flaky WHERE id = 2");

        var outcomes = await CompleteBatchAsync(db, jobs.ToArray(), ["{\"output\":\"bad\"}", "{\"output\":\"two\"}"]);

        // The bad answer undoes the task's set-based write; job by job, it fails alone and the other
        // job still gets its own outcome (its row is gone: skipped).
        Assert.Equal(jobs.Select(j => j.Id), outcomes.Select(o => o.Id));
        Assert.Equal([null, "skipped"], outcomes.Select(o => o.State));
        Assert.Equal("23514", outcomes[0].Code);
        Assert.Equal(["running", "skipped"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));
    }

    [Fact]
    public async Task The_worker_writes_a_batch_of_one_task_through_the_tasks_own_function_and_a_failed_one_job_by_job()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky ADD CONSTRAINT output_not_bad CHECK (output <> 'bad')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')");
        var jobs = await ClaimAsync(db);
        using var queue = new JobQueue(db);
        using var registry = new TaskRegistry(db);
        var task = (await registry.FindAsync(jobs[0].Task, CancellationToken.None))!;
        WriteBack Write(Claimed job, string output) =>
            new(task, new ClaimedJob(job.Id, job.Task, job.Attempt, 3), job.Hash, "{\"output\":\"" + output + "\"}", 5, 7);
        await using var connection = await db.OpenConnectionAsync();
        await using (var track = new NpgsqlCommand("SET track_functions = 'pl'", connection))
        {
            await track.ExecuteNonQueryAsync();
        }

        // Two good answers: the task's set-based function, called without llm.complete_batch's dispatch.
        var good = await queue.CompleteBatchAsync([Write(jobs[0], "one"), Write(jobs[1], "two")], CancellationToken.None, connection);
        Assert.Equal([jobs[0].Id, jobs[1].Id], good.Select(o => o.JobId));
        Assert.Equal(["succeeded", "succeeded"], good.Select(o => o.State));
        Assert.Equal((0L, 1L), await FunctionCallsAsync(connection, task.Name));

        // One answer breaks the CHECK constraint: the direct call is undone as a whole, and
        // llm.complete_batch writes each job in its own subtransaction.
        var mixed = await queue.CompleteBatchAsync([Write(jobs[2], "bad"), Write(jobs[3], "four")], CancellationToken.None, connection);
        Assert.Equal([null, "succeeded"], mixed.Select(o => o.State));
        Assert.Equal("23514", mixed[0].ErrorCode);
        Assert.Equal(1L, (await FunctionCallsAsync(connection, task.Name)).Dispatcher);
        Assert.Equal(["one", "two", null, "four"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
        Assert.Equal(["succeeded", "succeeded", "running", "succeeded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));

        // The write-back's settings were the transaction's own: the session keeps its defaults.
        await using var show = new NpgsqlCommand("SELECT current_setting('lock_timeout') || ' ' || current_setting('synchronous_commit')", connection);
        Assert.Equal("0 on", (string?)await show.ExecuteScalarAsync());
    }

    [Fact]
    public async Task The_worker_claims_then_reads_each_tasks_inputs_with_its_own_function()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        // A job whose row key cannot be read as the table's key: the task's inputs function fails on it.
        await db.ExecAsync("INSERT INTO llm.job (task, row_key, max_attempts, scheduled_at) VALUES ('public.flaky:output', '{\"id\": \"x\"}', 3, now() + interval '1 ms')");
        await WaitUntilAsync(() => db.ScalarAsync<bool>("SELECT bool_and(scheduled_at <= clock_timestamp()) FROM llm.job"));
        using var queue = new JobQueue(db);
        using var registry = new TaskRegistry(db);

        var first = await queue.ClaimAsync("test", 2, TimeSpan.FromMinutes(1), TaskFilter.Any, registry.FindAsync, CancellationToken.None);
        Assert.Equal(2, first.Count);
        foreach (var work in first.OrderBy(w => w.Job.Id))
        {
            Assert.Null(work.InputsError);
            var rowId = await db.ScalarAsync<long>($"SELECT (row_key->>'id')::bigint FROM llm.job WHERE id = {work.Job.Id}");
            Assert.Equal(await db.ScalarAsync<string>($"SELECT input FROM flaky WHERE id = {rowId}"), work.Inputs!.Values.GetProperty("input").GetString());
            // The hash the stale-write check compares, as the database computes it.
            Assert.Equal(await db.ScalarAsync<string>($"SELECT md5(jsonb_build_object('input', input)::text) FROM flaky WHERE id = {rowId}"), work.Inputs.Hash);
            Assert.Equal(1, work.Job.Attempt);
        }

        var broken = Assert.Single(await queue.ClaimAsync("test", 2, TimeSpan.FromMinutes(1), TaskFilter.Any, registry.FindAsync, CancellationToken.None));
        Assert.Null(broken.Inputs);
        Assert.StartsWith("could not read the row: ", broken.InputsError, StringComparison.Ordinal);
        Assert.Equal(3L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'running' AND locked_by = 'test' AND attempt = 1"));
    }

    /// <summary>Calls in this session of llm.complete_batch and of the task's set-based function.</summary>
    private static async Task<(long Dispatcher, long TaskFunction)> FunctionCallsAsync(NpgsqlConnection connection, string task)
    {
        await using (var flush = new NpgsqlCommand("SELECT pg_stat_force_next_flush()", connection))
        {
            await flush.ExecuteNonQueryAsync();
        }

        await using var command = new NpgsqlCommand(
            "SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'complete_batch'), 0)::bigint, " +
            "coalesce(sum(calls) FILTER (WHERE funcname = $1 || ':write_back'), 0)::bigint " +
            "FROM pg_stat_user_functions WHERE schemaname = 'llm'", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetInt64(1));
    }

    [Theory]
    [InlineData(100, true)]
    [InlineData(0, false)]
    public async Task Under_load_answers_that_end_apart_are_written_in_one_commit_and_an_idle_workers_at_once(int callsInFlight, bool together)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        var jobs = await ClaimAsync(db);
        using var queue = new JobQueue(db);
        using var registry = new TaskRegistry(db);
        var task = (await registry.FindAsync(jobs[0].Task, CancellationToken.None))!;
        var outcomes = new System.Collections.Concurrent.ConcurrentDictionary<long, TaskCompletionSource<string?>>();
        TaskCompletionSource<string?> Outcome(long id) => outcomes.GetOrAdd(id, _ => new TaskCompletionSource<string?>(TaskCreationOptions.RunContinuationsAsynchronously));
        // A clock that never moves: a lingering writer waits for the batch to fill (or the batcher to
        // complete), however slow the machine is, so the outcome does not depend on timing.
        using var batcher = new WriteBackBatcher(
            queue, (write, state, error) => { Outcome(write.Job.Id).TrySetResult(error?.Message ?? state); return ValueTask.CompletedTask; }, () => callsInFlight, time: new FrozenTime());

        // The second answer arrives once the writer took the first: under load it lingers and writes both
        // together; idle, it writes the first at once, before the second exists.
        await batcher.SubmitAsync(new WriteBack(task, new ClaimedJob(jobs[0].Id, jobs[0].Task, jobs[0].Attempt, 3), jobs[0].Hash, "{\"output\":\"A\"}", 1, 1));
        await WaitUntilAsync(() => Task.FromResult(batcher.Queued == 0));
        if (!together)
        {
            Assert.Equal("succeeded", await Outcome(jobs[0].Id).Task.WaitAsync(TimeSpan.FromSeconds(30)));
        }

        await batcher.SubmitAsync(new WriteBack(task, new ClaimedJob(jobs[1].Id, jobs[1].Task, jobs[1].Attempt, 3), jobs[1].Hash, "{\"output\":\"B\"}", 1, 1));
        await batcher.CompleteAndDrainAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(["succeeded", "succeeded"], (await Task.WhenAll(Outcome(jobs[0].Id).Task, Outcome(jobs[1].Id).Task).WaitAsync(TimeSpan.FromSeconds(30))).Select(s => s ?? "none"));

        // now() is the transaction's start: one commit gives both jobs the same finished_at.
        Assert.Equal(together ? 1L : 2L, await db.ScalarAsync<long>("SELECT count(DISTINCT finished_at) FROM llm.job"));
        Assert.Equal(["A", "B"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
    }

    [Fact]
    public async Task A_batcher_completed_while_a_writer_is_about_to_linger_writes_what_is_queued_and_stops()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        var jobs = await ClaimAsync(db);
        using var queue = new JobQueue(db);
        using var registry = new TaskRegistry(db);
        var task = (await registry.FindAsync(jobs[0].Task, CancellationToken.None))!;
        WriteBack Answer(int i, string output) => new(task, new ClaimedJob(jobs[i].Id, jobs[i].Task, jobs[i].Attempt, 3), jobs[i].Hash, "{\"output\":\"" + output + "\"}", 1, 1);

        // The writer asks how many calls are in flight after it took the first answer and before it lingers:
        // that is where the second answer arrives and the batcher is completed. The clock never moves, so a
        // writer that missed the completion would linger for ever.
        WriteBackBatcher? batcher = null;
        Task? drained = null;
        var settled = new System.Collections.Concurrent.ConcurrentDictionary<long, string?>();
        int CallsInFlight()
        {
            if (drained is null && batcher is not null)
            {
                batcher.SubmitAsync(Answer(1, "B")).AsTask().Wait(TimeSpan.FromSeconds(30));
                drained = batcher.CompleteAndDrainAsync();
            }

            return 100;
        }

        using (batcher = new WriteBackBatcher(
            queue, (write, state, error) => { settled[write.Job.Id] = error?.Message ?? state; return ValueTask.CompletedTask; }, CallsInFlight, time: new FrozenTime()))
        {
            await batcher.SubmitAsync(Answer(0, "A"));
            await WaitUntilAsync(() => Task.FromResult(drained is not null));
            await drained!.WaitAsync(TimeSpan.FromSeconds(30));
        }

        Assert.Equal(["succeeded", "succeeded"], jobs.Select(j => settled.GetValueOrDefault(j.Id) ?? "none"));
        Assert.Equal(["A", "B"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
    }

    /// <summary>Polls a condition every 5 ms, failing after 30 s.</summary>
    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within 30 s");
            await Task.Delay(5);
        }
    }

    private sealed record Claimed(long Id, string Task, int Attempt, string Hash);

    private static async Task<List<Claimed>> ClaimAsync(NpgsqlDataSource db)
    {
        var rows = await db.ListAsync<string[]>(
            "SELECT ARRAY[c.id::text, c.task, c.attempt::text, i.inputs_hash] FROM llm.claim('test', 10, 60) AS c " +
            "CROSS JOIN LATERAL \"llm\".\"public.flaky:output:inputs\"(ARRAY[c.id]) AS i ORDER BY c.id");
        return rows.Select(r => new Claimed(
            long.Parse(r[0], System.Globalization.CultureInfo.InvariantCulture), r[1],
            int.Parse(r[2], System.Globalization.CultureInfo.InvariantCulture), r[3])).ToList();
    }

    private static async Task<List<(long Id, string? State, string? Code)>> CompleteBatchAsync(NpgsqlDataSource db, Claimed[] jobs, string[] answers)
    {
        await using var command = db.CreateCommand(
            "SELECT job_id, state, error_code FROM llm.complete_batch($1, $2, $3, $4, $5::jsonb[], $6, $7)");
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(j => j.Task).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(j => j.Id).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(j => j.Attempt).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(j => j.Hash).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = answers });
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(_ => 5).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = jobs.Select(_ => 7).ToArray() });
        var outcomes = new List<(long Id, string? State, string? Code)>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            outcomes.Add((reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2)));
        }

        return outcomes;
    }

    [Fact]
    public async Task Enqueuers_notify_only_while_a_worker_sleeps()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await using var listener = await db.OpenConnectionAsync();
        await using (var listen = new NpgsqlCommand("LISTEN " + PgLlm.Worker.PgLlmWorker.JobsChannel, listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'busy worker')");
        Assert.False(listener.Wait(300));

        await db.ExecAsync("SELECT llm.worker_sleeps('test-worker')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (2, 'sleeping worker')");
        Assert.True(listener.Wait(10_000));

        await db.ExecAsync("SELECT llm.worker_wakes('test-worker')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (3, 'busy again')");
        Assert.False(listener.Wait(300));
    }

    [Fact]
    public async Task A_worker_about_to_sleep_sees_an_enqueuing_transaction_that_has_not_committed()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        Assert.True(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));

        await using var user = await db.OpenConnectionAsync();
        await using var transaction = await user.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand("INSERT INTO flaky (id, input) VALUES (1, 'slow transaction')", user, transaction))
        {
            await insert.ExecuteNonQueryAsync();
        }

        // The transaction enqueued without seeing a sleeping worker: the worker must not sleep yet.
        Assert.False(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));
        await transaction.CommitAsync();
        Assert.True(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));
    }
}
