using System.Diagnostics;
using System.Text.Json;
using Npgsql;
using PgLlm.Local;
using PgLlm.Queue;

namespace PgLlm.Tests.Integration;

/// <summary>
/// Fault injection, bounded in count and time: every job ends filled, superseded, skipped or failed
/// with a reason; none is lost, none loops, no row is written from stale inputs.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class ReliabilityTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;

    public ReliabilityTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_429_with_Retry_After_is_retried_no_sooner_than_asked()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Error(429, "slow down", retryAfter: TimeSpan.FromSeconds(1))
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        var requests = _fixture.Model.Requests;
        Assert.Equal(2, requests.Count);
        Assert.True(requests[1].ReceivedAt - requests[0].ReceivedAt >= TimeSpan.FromSeconds(0.95), "Retry-After was not honoured");
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        // The model client waits out a 429 itself: the job's attempt is not spent (see RateLimitTests).
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
    }

    [Theory]
    [InlineData(503, 2)]
    [InlineData(408, 2)]
    public async Task Transient_statuses_are_retried(int status, int expectedCalls)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Error(status, "try again")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(expectedCalls, _fixture.Model.RequestCount);
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
    }

    [Theory]
    [InlineData(400)]
    [InlineData(404)]
    [InlineData(422)]
    // 401/403 stop the endpoint instead, without spending the job's attempt: see Governor.EndpointStopTests.
    public async Task Permanent_statuses_fail_at_once(int status)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(status, "no");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(1, _fixture.Model.RequestCount);
        Assert.Equal("failed|1|permanent", await db.ScalarAsync<string>("SELECT state || '|' || attempt || '|' || (errors->0->>'kind') FROM llm.job"));
    }

    [Fact]
    public async Task An_answer_that_keeps_failing_validation_fails_before_max_attempts()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json("{\"sentiment\": ");
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        // The sentiment task allows 5 attempts; three invalid answers end it.
        Assert.Equal("failed|3", await db.ScalarAsync<string>("SELECT state || '|' || attempt FROM llm.job WHERE task = 'public.reviews:sentiment'"));
        Assert.Null(await db.ScalarAsync<string?>("SELECT sentiment FROM reviews"));
    }

    [Fact]
    public async Task An_answer_of_the_wrong_type_for_the_column_writes_nothing_and_counts_as_invalid()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // A column that holds strings, but not this one (a column that cannot hold strings at all fails the table check instead).
        // The table's edit trigger names its targets: it goes first (a migration puts it back).
        await db.ExecAsync("DROP TRIGGER \"pgllm:edited\" ON flaky; ALTER TABLE flaky ALTER COLUMN output TYPE varchar(3)");
        _fixture.Model.Responder = _ => ModelReply.Json("{\"output\": \"four\"}");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(["invalid"], (await db.ListAsync<string>("SELECT DISTINCT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e")));
        Assert.Contains("does not fit the columns", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
        Assert.Null(await db.ScalarAsync<string?>("SELECT output FROM flaky"));
    }

    [Fact]
    public async Task Failed_jobs_are_dead_letters_that_can_be_re_driven_by_task_or_id()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(400, "bad request");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('c')");
        var worker = _fixture.CreateWorker(db);
        using var timeout = new CancellationTokenSource(Bound);
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal(4L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));

        _fixture.Model.Responder = null;
        var admin = new PgLlmQueueAdmin(db);
        var firstId = await db.ScalarAsync<long>("SELECT id FROM llm.job WHERE task = 'public.flaky:output' ORDER BY id LIMIT 1");
        Assert.Equal(1, await admin.RetryFailedAsync(jobId: firstId));
        Assert.Equal(0, await admin.RetryFailedAsync(jobId: firstId));
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NOT NULL"));

        Assert.Equal(1, await admin.RetryFailedAsync(task: "public.flaky:output"));
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));

        // The SQL function does the same for everything left.
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT llm.retry_failed()"));
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state <> 'succeeded'"));
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job WHERE id = $1", firstId));
    }

    [Fact]
    public async Task Re_driving_takes_each_rows_latest_failed_job_and_leaves_rows_with_a_pending_one()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // Row 1 failed twice; row 2 failed and has a pending job again; row 3 failed once, on another task.
        var ids = await db.ListAsync<long>("""
            INSERT INTO llm.job (task, row_key, max_attempts, state, finished_at) VALUES
                ('public.flaky:output', '{"id": 1}', 3, 'failed', now()),
                ('public.flaky:output', '{"id": 1}', 3, 'failed', now()),
                ('public.flaky:output', '{"id": 2}', 3, 'failed', now()),
                ('public.flaky:output', '{"id": 2}', 3, 'pending', NULL),
                ('public.reviews:sentiment', '{"id": 3}', 3, 'failed', now())
            RETURNING id
            """);

        // The older failed job of row 1 is not re-driven on its own: the newer one stands for the row.
        Assert.Equal(0, await db.ScalarAsync<int>("SELECT llm.retry_failed(p_job_id => $1)", ids[0]));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.retry_failed('public.flaky:output')"));
        Assert.Equal(
            ["failed", "pending", "failed", "pending", "failed"],
            await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.retry_failed()"));
        Assert.Equal("pending", await db.ScalarAsync<string>("SELECT state FROM llm.job WHERE id = $1", ids[4]));
        Assert.Equal(0, await db.ScalarAsync<int>("SELECT llm.retry_failed()"));
    }

    [Fact]
    public async Task Failing_jobs_queued_ahead_never_hold_back_healthy_ones()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = request => request.UserText.StartsWith("Echo bad", StringComparison.Ordinal)
            ? ModelReply.Error(500, "poison")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'bad ' || g FROM generate_series(1, 20) AS g");
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'good ' || g FROM generate_series(21, 25) AS g");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db, o =>
        {
            o.Concurrency = 2;
            o.BatchSize = 2;
            o.RetryBaseDelay = TimeSpan.FromMilliseconds(300);
            o.RetryMaxDelay = TimeSpan.FromSeconds(1);
        }).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE id > 20 AND output IS NULL"));
        Assert.Equal(20L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
        // Healthy jobs finished before the poison jobs ran out of attempts.
        Assert.True(await db.ScalarAsync<bool>(
            "SELECT max(finished_at) FILTER (WHERE state = 'succeeded') < max(finished_at) FILTER (WHERE state = 'failed') FROM llm.job"));
    }

    [Fact]
    public async Task User_transactions_updating_rows_while_the_worker_drains_never_deadlock_and_every_row_ends_on_its_latest_input()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        const int rows = 40;
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'v0 ' || g FROM generate_series(1, $1) AS g", rows);
        _fixture.Model.Latency = TimeSpan.FromMilliseconds(20);

        using var timeout = new CancellationTokenSource(Bound);
        var worker = _fixture.CreateWorker(db, o => o.Concurrency = 8);
        using var stop = new CancellationTokenSource();
        var drain = worker.RunAsync(stop.Token);

        // Two user sessions each update random rows in multi-row transactions, in one lock order, so
        // they cannot deadlock each other: any deadlock would have to involve the worker.
        var errors = new List<Exception>();
        async Task UserAsync(int seed)
        {
            var random = new Random(seed);
            for (var i = 0; i < 60; i++)
            {
                try
                {
                    await using var connection = await db.OpenConnectionAsync(timeout.Token);
                    await using var transaction = await connection.BeginTransactionAsync(timeout.Token);
                    var ids = Enumerable.Range(0, 3).Select(_ => random.Next(1, rows + 1)).Distinct().Order().ToArray();
                    foreach (var id in ids)
                    {
                        await using var update = new NpgsqlCommand("UPDATE flaky SET input = $1 WHERE id = $2", connection, transaction);
                        update.Parameters.Add(new NpgsqlParameter { Value = $"v{seed}.{i} {id}" });
                        update.Parameters.Add(new NpgsqlParameter { Value = (long)id });
                        await update.ExecuteNonQueryAsync(timeout.Token);
                    }

                    await transaction.CommitAsync(timeout.Token);
                }
                catch (PostgresException ex)
                {
                    lock (errors)
                    {
                        errors.Add(ex);
                    }
                }
            }
        }

        await Task.WhenAll(UserAsync(1), UserAsync(2));
        await WaitUntilAsync(async () => await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')") == 0);
        await stop.CancelAsync();
        await drain;

        Assert.Empty(errors);
        await AssertEveryRowMatchesItsLatestInputAsync(db);
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
    }

    [Fact]
    public async Task Statements_cancelled_mid_drain_lose_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        const int rows = 40;
        const int cancels = 2; // fewer than the task's 3 attempts: every job must still succeed
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'item ' || g FROM generate_series(1, $1) AS g", rows);
        // Slow write-backs, so that the cancels below reliably land on a worker's write-back statement.
        await db.ExecAsync("""
            CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
            CREATE TRIGGER slow_write BEFORE UPDATE OF output ON flaky FOR EACH ROW EXECUTE FUNCTION slow_write();
            """);
        var builder = new NpgsqlConnectionStringBuilder(db.ConnectionString) { ApplicationName = "pgllm-worker-under-test" };
        await using var workerDb = NpgsqlDataSource.Create(builder.ConnectionString);

        using var timeout = new CancellationTokenSource(Bound);
        // One call at a time, so at most two jobs are held and every write-back is a single job's statement (the
        // one cancelled below): with more calls, answers that end together are written as one batch, whose
        // statement this does not match, and on a loaded machine they all might be.
        var drain = _fixture.CreateWorker(workerDb, o => o.Concurrency = 1).RunUntilIdleAsync(timeout.Token);
        var cancelled = 0L;
        for (var i = 0; i < 2000 && cancelled < cancels && !drain.IsCompleted; i++)
        {
            cancelled += await db.ScalarAsync<long>(
                "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM (SELECT pid FROM pg_stat_activity " +
                "WHERE application_name = 'pgllm-worker-under-test' AND state = 'active' AND query LIKE '%:write_back\"(ARRAY[%' LIMIT 1) AS a");
            await Task.Delay(5);
        }

        await drain;

        Assert.InRange(cancelled, 1, cancels);
        await AssertEveryRowMatchesItsLatestInputAsync(db);
        Assert.Equal(rows, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'"));
        Assert.Contains("canceling statement", await db.ScalarAsync<string>("SELECT string_agg(e->>'error', ' ') FROM llm.job, jsonb_array_elements(errors) AS e"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task PostgreSQL_stopped_and_restarted_mid_drain_the_worker_reconnects_and_loses_nothing()
    {
        await using var postgres = await LocalPostgres.StartAsync();
        await using var db = NpgsqlDataSource.Create(await postgres.CreateDatabaseAsync());
        await new PgLlm.Migrations.PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync();
        const int rows = 60;
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'item ' || g FROM generate_series(1, $1) AS g", rows);
        _fixture.Model.Latency = TimeSpan.FromMilliseconds(50);

        using var timeout = new CancellationTokenSource(Bound);
        using var stop = new CancellationTokenSource();
        var drain = _fixture.CreateWorker(db, o =>
        {
            o.Concurrency = 4;
            o.Lease = TimeSpan.FromSeconds(2);
            o.RescueInterval = TimeSpan.FromMilliseconds(500);
        }).RunAsync(stop.Token);
        await WaitUntilAsync(async () => await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") >= 10);

        // Down for as long as a stop and a start take: every connection the worker holds breaks.
        await postgres.StopAsync();
        await postgres.RestartAsync();

        await WaitUntilAsync(async () =>
        {
            try
            {
                return await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == rows;
            }
            catch (NpgsqlException)
            {
                return false;
            }
        });
        await stop.CancelAsync();
        await drain;

        await AssertEveryRowMatchesItsLatestInputAsync(db);
    }

    [Fact]
    public async Task A_worker_process_killed_mid_drain_leaves_its_jobs_to_another_worker_after_the_lease()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        const int rows = 40;
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'item ' || g FROM generate_series(1, $1) AS g", rows);
        _fixture.Model.Latency = TimeSpan.FromMilliseconds(200);

        using var process = StartWorkerProcess(db.ConnectionString);
        try
        {
            await WaitUntilAsync(async () => await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND task = 'public.flaky:output'") >= 4);
        }
        finally
        {
            process.Kill(entireProcessTree: true); // SIGKILL: no graceful shutdown, no release.
            await process.WaitForExitAsync();
        }

        var orphans = await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'running'");
        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db, o => o.RescueInterval = TimeSpan.FromMilliseconds(200)).RunUntilIdleAsync(timeout.Token);

        Assert.True(orphans > 0, "the kill should have left running jobs behind");
        await AssertEveryRowMatchesItsLatestInputAsync(db);
        Assert.Equal(rows, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task = 'public.flaky:output' AND state = 'succeeded'"));
        // The attempt a dead worker was on counts: the rescued jobs are on their second attempt.
        Assert.Equal(orphans, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task = 'public.flaky:output' AND attempt = 2"));
        // No job ran again after it succeeded: one call per attempt at most.
        foreach (var (input, attempts) in await AttemptsByInputAsync(db))
        {
            Assert.InRange(_fixture.Model.Requests.Count(r => r.UserText == "Echo " + input), 1, attempts);
        }
    }

    [Fact]
    public async Task On_stop_an_in_flight_call_that_answers_within_the_grace_period_is_written()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        using var gate = new ManualResetEventSlim();
        _fixture.Model.Responder = request =>
        {
            gate.Wait(Bound);
            return ModelReply.Json(DeterministicModel.Answer(request));
        };
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        using var stop = new CancellationTokenSource(Bound);
        var run = _fixture.CreateWorker(db, o => o.ShutdownGrace = TimeSpan.FromSeconds(20)).RunAsync(stop.Token);
        await WaitUntilAsync(() => Task.FromResult(_fixture.Model.RequestCount == 1));

        await stop.CancelAsync();
        gate.Set();
        await run;

        Assert.Equal("succeeded|1", await db.ScalarAsync<string>("SELECT state || '|' || attempt FROM llm.job"));
        await AssertEveryRowMatchesItsLatestInputAsync(db);
    }

    [Fact]
    public async Task Finished_history_is_pruned_after_the_retention_and_dead_letters_are_kept()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = request => request.UserText == "Echo bad"
            ? ModelReply.Error(400, "no")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'good'), (2, 'bad')");
        await _fixture.CreateWorker(db, o => o.Retention = null).RunUntilIdleAsync();
        await db.ExecAsync("UPDATE llm.job SET finished_at = now() - interval '8 days'");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (3, 'recent')");
        await _fixture.CreateWorker(db, o => o.Retention = null).RunUntilIdleAsync();
        Assert.Equal(3L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));

        Assert.Equal(1, await new PgLlmQueueAdmin(db).PruneAsync(TimeSpan.FromDays(7)));

        Assert.Equal(
            ["failed Echo bad", "succeeded Echo recent"],
            await db.ListAsync<string>("SELECT j.state || ' Echo ' || f.input FROM llm.job AS j JOIN flaky AS f ON f.id = (j.row_key->>'id')::bigint ORDER BY j.state"));
    }

    [Fact]
    public async Task The_worker_prunes_history_older_than_its_retention()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'old')");
        await _fixture.CreateWorker(db).RunUntilIdleAsync();
        await db.ExecAsync("UPDATE llm.job SET finished_at = now() - interval '2 hours'");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (2, 'new')");

        await _fixture.CreateWorker(db, o => o.Retention = TimeSpan.FromHours(1)).RunUntilIdleAsync();

        Assert.Equal(["Echo new"], await db.ListAsync<string>("SELECT 'Echo ' || f.input FROM llm.job AS j JOIN flaky AS f ON f.id = (j.row_key->>'id')::bigint"));
    }

    private Process StartWorkerProcess(string connectionString)
    {
        // The example in --serve mode is a plain worker process: it drains every task in the
        // registry, whichever assembly declared it.
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var example = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "Reviews", "bin", configuration, "net10.0", "Reviews.dll"));
        Assert.True(File.Exists(example), $"the example worker is not built: {example}");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(example);
        start.ArgumentList.Add("--serve");
        start.Environment["PGLLM_CONNECTION"] = connectionString;
        start.Environment["PGLLM_BASE_URL"] = _fixture.Model.BaseUrl.ToString();
        start.Environment["PGLLM_API_KEY"] = _fixture.Model.ApiKey;
        start.Environment["PGLLM_MODEL"] = "test-model";
        start.Environment["PgLlm__Worker__Lease"] = "00:00:02";
        start.Environment["PgLlm__Worker__Concurrency"] = "4";
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task<List<(string Input, int Attempts)>> AttemptsByInputAsync(NpgsqlDataSource db)
    {
        var result = new List<(string, int)>();
        await using var command = db.CreateCommand(
            "SELECT f.input, j.attempt FROM llm.job AS j JOIN flaky AS f ON f.id = (j.row_key->>'id')::bigint WHERE j.task = 'public.flaky:output'");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            result.Add((reader.GetString(0), reader.GetInt32(1)));
        }

        return result;
    }

    /// <summary>Every row of <c>flaky</c> holds the deterministic answer for its current input.</summary>
    private static async Task AssertEveryRowMatchesItsLatestInputAsync(NpgsqlDataSource db)
    {
        await using var command = db.CreateCommand("SELECT input, output FROM flaky ORDER BY id");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            var input = reader.GetString(0);
            Assert.False(reader.IsDBNull(1), $"row '{input}' was never filled");
            Assert.Equal(ExpectedOutput(input), reader.GetString(1));
        }
    }

    private static string ExpectedOutput(string input)
    {
        var schema = JsonDocument.Parse("""{"type":"object","properties":{"output":{"type":"string"}},"required":["output"],"additionalProperties":false}""").RootElement;
        var request = new ModelRequest("m", [new ModelMessage("user", "Echo " + input, [])], "json_schema", "result", schema, true, null, null, "{}", DateTimeOffset.UtcNow);
        return JsonDocument.Parse(DeterministicModel.Answer(request)).RootElement.GetProperty("output").GetString()!;
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound");
            await Task.Delay(50);
        }
    }
}
