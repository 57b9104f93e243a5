using Npgsql;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Runtime;

/// <summary>A batch-tier task (<see cref="LlmTier.Batch"/>) next to a live one that reads another column.</summary>
[LlmTable("batch_notes")]
public sealed record BatchNote(long Id, string Body, string? Note)
{
    [LlmColumn("Category of {Body}", Tier = LlmTier.Batch)]
    public string? Category { get; init; }

    [LlmColumn("Summarize {Note}")]
    public string? Summary { get; init; }
}

/// <summary>
/// <c>Tier = LlmTier.Batch</c> in a generated script applied to a real database: the task registers as a batch-tier
/// task, its enqueue trigger puts jobs at priority 2 (which <c>llm.claim</c> never takes) without waking a worker and
/// without promoting them on a live change, a live task of the same table is unaffected, and re-registering the task
/// as live moves its waiting jobs to priority 0.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class BatchTierDeclarationTests
{
    private const string BatchTask = "public.batch_notes:category";
    private const string LiveTask = "public.batch_notes:summary";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public BatchTierDeclarationTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task An_insert_enqueues_at_priority_2_which_no_claim_takes_and_an_update_keeps_its_one_pending_job()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        Assert.Equal([$"{BatchTask}|batch", $"{LiveTask}|live"],
            await db.ListAsync<string>("SELECT concat_ws('|', name, tier) FROM llm.task WHERE table_name = 'batch_notes' ORDER BY name"));

        await db.ExecAsync("INSERT INTO batch_notes (id, body) VALUES (1, 'a steel bolt')");
        var job = await db.ScalarAsync<long>($"SELECT id FROM llm.job WHERE task = '{BatchTask}'");
        Assert.Equal([$"{job}|{BatchTask}|2|pending"], await JobsAsync(db));
        Assert.Empty(await db.ListAsync<long>("SELECT id FROM llm.claim('test', 10, 60, NULL, NULL)"));
        Assert.Empty(await db.ListAsync<long>("SELECT id FROM llm.claim('test', 10, 60, NULL, NULL, 10)"));

        // A live change while the job waits: the same one job covers the new values, still in the batch tier.
        await db.ExecAsync("UPDATE batch_notes SET body = 'a brass bolt' WHERE id = 1");
        Assert.Equal([$"{job}|{BatchTask}|2|pending"], await JobsAsync(db));

        // A change while a batch holds the job: the row's new values get a job of their own, in the batch tier too.
        await db.ExecAsync($"UPDATE llm.job SET state = 'running', attempt = 1, locked_by = 'batch', lease_until = now() + interval '1 day' WHERE id = {job}");
        await db.ExecAsync("UPDATE batch_notes SET body = 'a copper bolt' WHERE id = 1");
        Assert.Equal([$"{BatchTask}|2|running", $"{BatchTask}|2|pending"],
            await db.ListAsync<string>("SELECT concat_ws('|', task, priority, state) FROM llm.job ORDER BY id"));
        Assert.Equal(job, await db.ScalarAsync<long>("SELECT id FROM llm.job WHERE state = 'running'"));
        Assert.Empty(await db.ListAsync<long>("SELECT id FROM llm.claim('test', 10, 60, NULL, NULL)"));
    }

    [Fact]
    public async Task A_live_task_on_the_same_table_is_claimed_and_answered_while_the_batch_tier_job_waits()
    {
        await using var db = await _fixture.CreateDatabaseAsync();

        await db.ExecAsync("INSERT INTO batch_notes (id, body, note) VALUES (1, 'a steel bolt', 'for the garden gate')");
        Assert.Equal([$"{BatchTask}|2", $"{LiveTask}|0"],
            await db.ListAsync<string>("SELECT concat_ws('|', task, priority) FROM llm.job WHERE state = 'pending' ORDER BY task"));
        Assert.Equal([LiveTask], await ClaimedThenRolledBackAsync(db));

        // A worker answers the live task; the batch-tier job is left where it is.
        using (var stop = new CancellationTokenSource())
        {
            var worker = _fixture.CreateWorker(db).RunAsync(stop.Token);
            try
            {
                await Eventually.TrueAsync(async () => await db.ScalarAsync<bool>("SELECT summary IS NOT NULL FROM batch_notes WHERE id = 1"),
                    "the live task's answer is written", Bound);
            }
            finally
            {
                await stop.CancelAsync();
                await worker;
            }
        }

        Assert.Equal([$"{BatchTask}|2|pending", $"{LiveTask}|0|succeeded"],
            await db.ListAsync<string>("SELECT concat_ws('|', task, priority, state) FROM llm.job ORDER BY task"));
        Assert.True(await db.ScalarAsync<bool>("SELECT category IS NULL FROM batch_notes WHERE id = 1"));
    }

    [Fact]
    public async Task A_batch_tier_insert_wakes_no_sleeping_worker_and_a_live_one_does()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await using var listener = await db.OpenConnectionAsync();
        var notified = new List<string>();
        listener.Notification += (_, e) => notified.Add(e.Payload);
        await using (var listen = new NpgsqlCommand("LISTEN " + PgLlm.Worker.PgLlmWorker.JobsChannel, listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        await db.ExecAsync("SELECT llm.worker_sleeps('test-worker')");

        // Notifications of one session arrive in commit order: the marker comes after anything the insert sent.
        await db.ExecAsync("INSERT INTO batch_notes (id, body) VALUES (1, 'a steel bolt')");
        await db.ExecAsync($"NOTIFY {PgLlm.Worker.PgLlmWorker.JobsChannel}, 'after the batch-tier insert'");
        await WaitForAsync(listener, notified, "after the batch-tier insert");
        Assert.Equal(["after the batch-tier insert"], notified);

        await db.ExecAsync("INSERT INTO batch_notes (id, body, note) VALUES (2, 'a brass nut', 'for the shed')");
        await db.ExecAsync($"NOTIFY {PgLlm.Worker.PgLlmWorker.JobsChannel}, 'after the live insert'");
        await WaitForAsync(listener, notified, "after the live insert");
        Assert.Equal(["after the batch-tier insert", string.Empty, "after the live insert"], notified);
    }

    [Fact]
    public async Task Re_registering_the_task_as_live_moves_its_waiting_jobs_to_priority_0_and_back()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO batch_notes (id, body) SELECT g, 'part ' || g FROM generate_series(1, 3) AS g");
        var batchRegistration = Registration(BatchTask);
        Assert.EndsWith(",\n    tier => 'batch');", batchRegistration, StringComparison.Ordinal);
        var hash = await db.ScalarAsync<string>($"SELECT definition_hash FROM llm.task WHERE name = '{BatchTask}'");

        // The same declaration without Tier = LlmTier.Batch: the registration a live task's script makes.
        await db.ExecAsync(batchRegistration.Replace(",\n    tier => 'batch');", ");", StringComparison.Ordinal));

        Assert.Equal("live", await db.ScalarAsync<string>($"SELECT tier FROM llm.task WHERE name = '{BatchTask}'"));
        Assert.Equal(hash, await db.ScalarAsync<string>($"SELECT definition_hash FROM llm.task WHERE name = '{BatchTask}'"));
        Assert.Equal(["0|3"], await db.ListAsync<string>(
            $"SELECT concat_ws('|', priority, count(*)) FROM llm.job WHERE task = '{BatchTask}' AND state = 'pending' GROUP BY priority"));
        Assert.Equal(2, (await db.ListAsync<long>("SELECT id FROM llm.claim('test', 2, 60, NULL, NULL)")).Count);

        // And back to the batch tier: the job still waiting goes with it (the claimed ones run where they are).
        await db.ExecAsync(batchRegistration);
        Assert.Equal(["2|pending", "0|running", "0|running"], await db.ListAsync<string>(
            $"SELECT concat_ws('|', priority, state) FROM llm.job WHERE task = '{BatchTask}' ORDER BY state, id"));
        Assert.Empty(await db.ListAsync<long>("SELECT id FROM llm.claim('test', 10, 60, NULL, NULL)"));
    }

    private static Task<List<string>> JobsAsync(NpgsqlDataSource db) =>
        db.ListAsync<string>("SELECT concat_ws('|', id, task, priority, state) FROM llm.job ORDER BY id");

    /// <summary>The tasks of the jobs <c>llm.claim</c> takes, in a transaction then rolled back (the jobs stay pending).</summary>
    private static async Task<List<string>> ClaimedThenRolledBackAsync(NpgsqlDataSource db)
    {
        await using var connection = await db.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using var claim = new NpgsqlCommand("SELECT task FROM llm.claim('test', 10, 60, NULL, NULL) ORDER BY task", connection, transaction);
        var tasks = new List<string>();
        await using (var reader = await claim.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                tasks.Add(reader.GetString(0));
            }
        }

        await transaction.RollbackAsync();
        return tasks;
    }

    /// <summary>The <c>llm.register_task</c> statement of <paramref name="task"/> in the table's generated script.</summary>
    private static string Registration(string task)
    {
        var sql = PgLlm.Generated.PgLlmScripts.BatchNote.Sql;
        var start = sql.IndexOf($"SELECT llm.register_task('{task}',", StringComparison.Ordinal);
        Assert.True(start >= 0, $"the script registers {task}");
        return sql[start..(sql.IndexOf(");\n", start, StringComparison.Ordinal) + 2)];
    }

    /// <summary>Reads notifications until one with <paramref name="payload"/> came; fails after the bound.</summary>
    private static async Task WaitForAsync(NpgsqlConnection listener, List<string> notified, string payload)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!notified.Contains(payload))
        {
            var left = deadline - DateTime.UtcNow;
            Assert.True(left > TimeSpan.Zero, $"the notification '{payload}' did not come within {Bound.TotalSeconds} s");
            await listener.WaitAsync(left);
        }
    }
}
