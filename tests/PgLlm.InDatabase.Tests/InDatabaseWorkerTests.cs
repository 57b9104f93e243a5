using System.Text.Json;
using Npgsql;
using PgLlm.Local;
using Xunit.Abstractions;

namespace PgLlm.InDatabase.Tests;

/// <summary>The in-database worker answers rows end to end through the http stand-in and the local endpoint.</summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseWorkerTests
{
    private readonly InDatabaseFixture _fixture;
    private readonly ITestOutputHelper _output;

    public InDatabaseWorkerTests(InDatabaseFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Rows_get_the_models_answers_with_the_same_request_the_dotnet_worker_sends()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'alpha'), (2, 'beta {Input} }}')");
        await db.ExecAsync("INSERT INTO notes (id, body) VALUES (1, 'The meeting moved to Friday.')");

        var jobs = await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal(3, jobs);
        Assert.Equal(3, _fixture.Model.RequestCount);
        foreach (var request in _fixture.Model.Requests)
        {
            Assert.Equal("json_schema", request.ResponseFormatType);
            Assert.Equal("result", request.SchemaName);
            Assert.True(request.Strict);
        }

        // Each row holds exactly what the deterministic model answers for its rendered prompt.
        var beta = _fixture.Model.Requests.Single(r => r.UserText.StartsWith("Echo beta", StringComparison.Ordinal));
        Assert.Equal("Echo beta {Input} }}", beta.UserText);
        Assert.Equal("test-model", beta.Model);
        Assert.Null(beta.SystemText);
        Assert.Equal(AnswerOf(beta, "output"), await db.ScalarAsync<string>("SELECT output FROM items WHERE id = 2"));

        var note = _fixture.Model.Requests.Single(r => r.Model == "tiny-model");
        Assert.Equal("Summarize {in one line}: The meeting moved to Friday.", note.UserText);
        Assert.Equal("Answer briefly.", note.SystemText);
        Assert.Equal(
            """{"type":"object","properties":{"summary":{"type":"string"}},"required":["summary"],"additionalProperties":false}""",
            note.Schema!.Value.GetRawText());
        Assert.Equal(AnswerOf(note, "summary"), await db.ScalarAsync<string>("SELECT summary FROM notes WHERE id = 1"));

        Assert.Equal(["succeeded"], await db.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        Assert.Equal(3, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE attempt = 1 AND input_tokens > 0 AND output_tokens > 0 AND finished_at IS NOT NULL"));
    }

    [Fact]
    public async Task Both_workers_send_the_same_request_for_the_same_task()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO notes (id, body) VALUES (1, 'Same words {{ here }}.')");
        using (var dotnet = _fixture.CreateDotNetWorker(db, concurrency: 1))
        {
            await dotnet.RunUntilIdleAsync();
        }

        await db.ExecAsync("UPDATE notes SET body = body || ' ' WHERE id = 1");
        await InDatabaseFixture.RunWorkerAsync(db);

        var requests = _fixture.Model.Requests;
        Assert.Equal(2, requests.Count);
        var (byDotNet, byDatabase) = (requests[0], requests[1]);
        Assert.Equal(byDotNet.Model, byDatabase.Model);
        Assert.Equal(byDotNet.SystemText, byDatabase.SystemText);
        Assert.Equal(byDotNet.UserText + " ", byDatabase.UserText);
        Assert.Equal(byDotNet.Messages.Select(m => m.Role), byDatabase.Messages.Select(m => m.Role));
        Assert.Equal(byDotNet.ResponseFormatType, byDatabase.ResponseFormatType);
        Assert.Equal(byDotNet.SchemaName, byDatabase.SchemaName);
        Assert.Equal(byDotNet.Strict, byDatabase.Strict);
        // The same schema with its properties in the same order (the .NET client indents it).
        Assert.Equal(Compact(byDotNet.Schema!.Value), Compact(byDatabase.Schema!.Value));
        Assert.Equal(["succeeded", "succeeded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));
    }

    [Fact]
    public async Task The_worker_picks_up_a_new_job_while_it_runs_and_stops_at_its_time_bound()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var started = DateTimeOffset.UtcNow;
        var run = InDatabaseFixture.RunWorkerAsync(db, runSeconds: 6, stopWhenIdle: false);
        // The job comes in once the worker runs and has found the queue empty (it is waiting between polls).
        await Conditions.WaitUntilAsync(
            async () => await db.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'CALL llm.run_worker%' AND wait_event = 'PgSleep')"),
            TimeSpan.FromSeconds(5), "the worker to find the queue empty");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'late')");

        Assert.Equal(1, await run);
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        // Reported, not asserted: timing belongs in the benchmark.
        _output.WriteLine($"picked up {await db.ScalarAsync<double>("SELECT extract(epoch FROM attempted_at - created_at)::float8 * 1000 FROM llm.job"):0} ms after the insert (idle poll 100 ms)");
        Assert.NotNull(await db.ScalarAsync<string?>("SELECT output FROM items"));
        // The run was bounded by its own clock, not by the queue running dry.
        Assert.True(DateTimeOffset.UtcNow - started >= TimeSpan.FromSeconds(5.5));
    }

    [Fact]
    public async Task No_user_row_or_job_row_is_locked_and_no_timeout_leaks_while_the_model_is_called()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");
        long locks = -1;
        string? userUpdate = null;
        _fixture.Model.Responder = request =>
        {
            using var connection = db.OpenConnection();
            using (var count = new NpgsqlCommand(
                "SELECT count(*) FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation " +
                "WHERE l.pid = (SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'CALL llm.run_worker%' AND pid <> pg_backend_pid()) " +
                "AND c.relname IN ('items', 'job', 'task')", connection))
            {
                locks = (long)count.ExecuteScalar()!;
            }

            // A user's write to the same row goes through at once, and so does a lock on the job row.
            using (var update = new NpgsqlCommand(
                "SET lock_timeout = '2s'; UPDATE items SET input = input WHERE id = 1; " +
                "SELECT state FROM llm.job FOR UPDATE NOWAIT", connection))
            {
                userUpdate = (string)update.ExecuteScalar()!;
            }

            return ModelReply.Json(DeterministicModel.Answer(request));
        };
        await using var worker = await db.OpenConnectionAsync();

        await InDatabaseFixture.RunWorkerAsync(worker);

        Assert.Equal(0, locks);
        Assert.Equal("running", userUpdate);
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        // http.timeout_msec was set for the call's transaction only, never for the session.
        await using var setting = new NpgsqlCommand("SELECT coalesce(current_setting('http.timeout_msec', true), '')", worker);
        Assert.Equal(string.Empty, (string)(await setting.ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task Both_workers_drain_one_queue_side_by_side_and_every_job_runs_once()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Latency = TimeSpan.FromMilliseconds(150);
        await db.ExecAsync("INSERT INTO items (id, input) SELECT g, 'row ' || g FROM generate_series(1, 40) AS g");

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var inDatabase = InDatabaseFixture.RunWorkerAsync(db, runSeconds: 100);
        // The .NET worker starts once the in-database one has claimed a job (so that both take part).
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM llm.job WHERE locked_by LIKE 'in-database:%' OR state = 'succeeded')"),
            TimeSpan.FromSeconds(10), "the in-database worker's first claim");
        using var dotnet = _fixture.CreateDotNetWorker(db, concurrency: 1);
        var byDotNet = await dotnet.RunUntilIdleAsync(timeout.Token);
        var byDatabase = await inDatabase;

        Assert.True(byDatabase > 0, "the in-database worker ran no job");
        Assert.True(byDotNet > 0, "the .NET worker ran no job");
        Assert.Equal(40, byDatabase + byDotNet);
        Assert.Equal(40, _fixture.Model.RequestCount);
        Assert.Equal(40, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND attempt = 1"));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM items WHERE output IS NULL"));
    }

    [Fact]
    public async Task A_row_updated_while_the_model_answers_gets_the_newer_answer_never_the_stale_one()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'first')");
        _fixture.Model.Responder = request =>
        {
            if (request.UserText == "Echo first")
            {
                using var connection = db.OpenConnection();
                using var update = new NpgsqlCommand("SET statement_timeout = '5s'; UPDATE items SET input = 'second' WHERE id = 1", connection);
                update.ExecuteNonQuery();
            }

            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        await InDatabaseFixture.RunWorkerAsync(db);

        var second = _fixture.Model.Requests.Single(r => r.UserText == "Echo second");
        Assert.Equal(AnswerOf(second, "output"), await db.ScalarAsync<string>("SELECT output FROM items"));
        Assert.Equal(["succeeded", "superseded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY state"));
    }

    [Fact]
    public async Task A_row_deleted_before_the_worker_reads_it_is_skipped_without_a_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");
        await db.ExecAsync("DELETE FROM items");

        Assert.Equal(0, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal("skipped", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
    }

    [Fact]
    public async Task An_unconfigured_worker_calls_nothing_and_leaves_the_queue_alone()
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(0, await InDatabaseFixture.RunWorkerAsync(db, runSeconds: 5));
        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal("pending", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(0, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
    }

    private static string Compact(JsonElement json) => System.Text.Json.Nodes.JsonNode.Parse(json.GetRawText())!.ToJsonString();

    internal static string AnswerOf(ModelRequest request, string column) =>
        JsonDocument.Parse(DeterministicModel.Answer(request)).RootElement.GetProperty(column).GetString()!;
}
