using System.Text.Json;
using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>Failed attempts are counted and bounded; stale answers and deleted rows write nothing.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class FailureTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public FailureTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_job_that_keeps_failing_stops_at_max_attempts_with_every_error_kept()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(500, "upstream exploded");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(3, _fixture.Model.RequestCount);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(3, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal(3, await db.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job"));
        Assert.Contains("500", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
        Assert.Null(await db.ScalarAsync<string?>("SELECT output FROM flaky"));
    }

    [Theory]
    [InlineData("this is not json", "not valid JSON")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("{\"unrelated\": 1}", "has no \"output\"")]
    public async Task A_bad_answer_writes_nothing_and_counts_as_a_failed_attempt(string answer, string expectedError)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Json(answer)
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Contains(expectedError, await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
        Assert.NotNull(await db.ScalarAsync<string?>("SELECT output FROM flaky"));
    }

    [Fact]
    public async Task Keys_outside_the_task_in_an_answer_are_ignored()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json("{\"output\": \"ok\", \"input\": \"overwritten\", \"id\": 99}");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'original')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("ok|original|1", await db.ScalarAsync<string>("SELECT output || '|' || input || '|' || id FROM flaky"));
    }

    [Fact]
    public async Task A_row_updated_while_the_model_answers_gets_the_newer_answer_never_the_stale_one()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'first')");
        _fixture.Model.Responder = request =>
        {
            if (request.UserText == "Echo first")
            {
                // A user write to the same row while the model is "thinking": it must not wait on the worker.
                using var connection = db.OpenConnection();
                using var update = new NpgsqlCommand("SET statement_timeout = '5s'; UPDATE flaky SET input = 'second' WHERE id = 1", connection);
                update.ExecuteNonQuery();
            }

            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        var second = _fixture.Model.Requests.Single(r => r.UserText == "Echo second");
        Assert.Equal(
            JsonDocument.Parse(DeterministicModel.Answer(second)).RootElement.GetProperty("output").GetString(),
            await db.ScalarAsync<string>("SELECT output FROM flaky"));
        Assert.Equal(["succeeded", "superseded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY state"));
    }

    [Fact]
    public async Task An_update_whose_trigger_saw_the_job_still_pending_is_not_lost()
    {
        // The race: a user transaction updates the row while its job is pending (so its trigger adds
        // nothing), the worker claims the job and reads the old committed values, then the user commits.
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'first')");
        await using var user = await db.OpenConnectionAsync();
        await using var transaction = await user.BeginTransactionAsync();
        await using (var update = new NpgsqlCommand("UPDATE flaky SET input = 'second' WHERE id = 1", user, transaction))
        {
            await update.ExecuteNonQueryAsync();
        }

        _fixture.Model.Responder = request =>
        {
            if (request.UserText == "Echo first")
            {
                transaction.Commit();
            }

            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        var second = _fixture.Model.Requests.Single(r => r.UserText == "Echo second");
        Assert.Equal(
            JsonDocument.Parse(DeterministicModel.Answer(second)).RootElement.GetProperty("output").GetString(),
            await db.ScalarAsync<string>("SELECT output FROM flaky"));
        Assert.Equal(["succeeded", "superseded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY state"));
    }

    [Fact]
    public async Task A_row_deleted_before_the_worker_reads_it_is_skipped_without_a_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        await db.ExecAsync("DELETE FROM flaky");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal("skipped", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
    }

    [Fact]
    public async Task A_row_deleted_while_the_model_answers_is_skipped()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        _fixture.Model.Responder = request =>
        {
            using var connection = db.OpenConnection();
            using var delete = new NpgsqlCommand("SET statement_timeout = '5s'; DELETE FROM flaky", connection);
            delete.ExecuteNonQuery();
            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("skipped", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky"));
    }

    [Fact]
    public async Task A_model_that_answers_too_slowly_times_out_and_the_attempt_is_counted()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Latency = TimeSpan.FromSeconds(2);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db, o => o.ModelTimeout = TimeSpan.FromMilliseconds(200)).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(3, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.StartsWith("timeout", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_running_worker_wakes_on_notify_without_waiting_for_its_poll()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        using var stop = new CancellationTokenSource(Bound);
        // A poll interval longer than the test's bound: only the notification can wake it in time.
        var run = _fixture.CreateWorker(db, o => o.PollInterval = TimeSpan.FromMinutes(10)).RunAsync(stop.Token);
        await WaitUntilAsync(() => db.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'LISTEN%')"));

        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'wake up')");
        await WaitUntilAsync(async () => await db.ScalarAsync<string?>("SELECT output FROM flaky") is not null);

        await stop.CancelAsync();
        await run;
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
    }

    [Fact]
    public async Task Stopping_the_worker_releases_an_unanswered_job_without_spending_its_attempt()
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
        var run = _fixture.CreateWorker(db, o => o.ShutdownGrace = TimeSpan.FromMilliseconds(100)).RunAsync(stop.Token);
        await WaitUntilAsync(() => Task.FromResult(_fixture.Model.RequestCount == 1));

        await stop.CancelAsync();
        await run;
        gate.Set();

        Assert.Equal("pending", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(0, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Null(await db.ScalarAsync<string?>("SELECT output FROM flaky"));
    }

    [Fact]
    public async Task Jobs_of_a_task_missing_from_the_registry_are_skipped_with_a_reason()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO llm.job (task, row_key, max_attempts) VALUES ('public.nowhere:thing', '{\"id\": 1}', 3)");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("skipped", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Contains("public.nowhere:thing", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
    }

    /// <summary>Polls a condition every 20 ms, failing after the test's bound.</summary>
    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound");
            await Task.Delay(20);
        }
    }
}
