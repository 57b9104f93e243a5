using System.Globalization;
using System.Text.Json;
using Npgsql;
using PgLlm.Cli;
using PgLlm.Queue;
using PgLlm.Tests.Integration;
using Spectre.Console.Testing;

namespace PgLlm.Tests.Operations;

/// <summary>
/// Live work first and controlled re-runs (queue step 11): re-run and backfill jobs wait behind live ones, a live change
/// promotes a waiting re-run job, and <c>pgllm rerun</c> enqueues exactly the stale rows, stops at its cost cap and
/// resumes, and enqueues nothing on a dry run.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class RerunTests
{
    private const string Task = "public.flaky:output";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;

    public RerunTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Live_jobs_are_claimed_before_rerun_jobs_and_a_live_change_promotes_a_waiting_rerun_job()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await FilledAndStaleAsync(db.DataSource, rows: 5);
        var run = await db.DataSource.ScalarAsync<long>($"SELECT llm.run_start('{Task}', 'stale', NULL, NULL, NULL)");
        Assert.Equal(5, await db.DataSource.ScalarAsync<int>($"SELECT enqueued FROM llm.run_enqueue({run}, 100)"));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (6, 'row 6')");

        // The live insert came last and is claimed first; the re-run's jobs wait at priority 1.
        Assert.Equal(["{\"id\": 6}"], await ClaimAsync(db.DataSource, 1));
        Assert.Equal(
            ["1|5"], await db.DataSource.ListAsync<string>("SELECT concat_ws('|', priority, count(*)) FROM llm.job WHERE state = 'pending' GROUP BY priority"));

        // A live change to a row with a waiting re-run job promotes that job (no second job) to live work.
        var job = await db.DataSource.ScalarAsync<long>("SELECT id FROM llm.job WHERE state = 'pending' AND row_key = '{\"id\": 4}'");
        await db.DataSource.ExecAsync("UPDATE flaky SET input = 'row 4 changed' WHERE id = 4");
        Assert.Equal($"{job}|0|{run}", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', id, priority, run_id) FROM llm.job WHERE state = 'pending' AND row_key = '{\"id\": 4}'"));
        Assert.Equal(["{\"id\": 4}"], await ClaimAsync(db.DataSource, 1));
        // Then the re-run's jobs, in the run's order.
        Assert.Equal(
            await db.DataSource.ListAsync<string>("SELECT row_key::text FROM llm.run_row WHERE row_key <> '{\"id\": 4}' ORDER BY n LIMIT 2"),
            await ClaimAsync(db.DataSource, 2));

        // The worker's claim takes live jobs first and no more re-run jobs than its room for them (it keeps calls for live work).
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (7, 'row 7')");
        Assert.Equal("2|0|1", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*), count(*) FILTER (WHERE j.priority = 0 AND j.row_key <> '{\"id\": 7}'), count(*) FILTER (WHERE j.row_key = '{\"id\": 7}')) " +
            "FROM llm.claim('test', 10, 60, NULL, NULL, 1) AS c JOIN llm.job AS j ON j.id = c.id"));
        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));

        // The claim still walks the ready jobs' index in order and stops at its limit.
        var plan = await ClaimPlanAsync(db.DataSource);
        Assert.Contains("job_ready", plan, StringComparison.Ordinal);
        Assert.DoesNotContain("Sort", plan, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rerun_stale_enqueues_exactly_the_stale_rows_at_low_priority_and_fills_them()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await FilledAndStaleAsync(db.DataSource, rows: 6);
        // Row 2 is run again by a live change under the new definition: current, not stale.
        await db.DataSource.ExecAsync("UPDATE flaky SET input = 'row 2 again' WHERE id = 2");
        await DrainAsync(db.DataSource);
        Assert.Equal("6|1|5|0", await RowsAsync(db.DataSource));

        var (exit, output) = await WithWorkerAsync(db.DataSource, () => Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "rerun", "--task", Task, "--stale"));

        Assert.True(exit == 0, output);
        Assert.Contains("Re-ran public.flaky:output: 5 rows written, 0 failed", output, StringComparison.Ordinal);
        Assert.Equal(
            ["{\"id\": 1}|1|succeeded", "{\"id\": 3}|1|succeeded", "{\"id\": 4}|1|succeeded", "{\"id\": 5}|1|succeeded", "{\"id\": 6}|1|succeeded"],
            await db.DataSource.ListAsync<string>("SELECT concat_ws('|', row_key::text, priority, state) FROM llm.job WHERE run_id IS NOT NULL ORDER BY row_key"));
        Assert.Equal("6|6|0|0", await RowsAsync(db.DataSource));
        Assert.Equal("done", await db.DataSource.ScalarAsync<string>("SELECT outcome FROM llm.run"));
    }

    [Fact]
    public async Task Rerun_max_cost_stops_at_the_cap_and_a_second_invocation_resumes_with_the_spend_so_far()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 1000, 2000)");
        await FilledAndStaleAsync(db.DataSource, rows: 9);
        var perJob = await db.DataSource.ScalarAsync<decimal>("SELECT avg(estimated_cost) FROM llm.job WHERE state = 'succeeded'");
        Assert.True(perJob > 0);
        var cap = (perJob * 3.5m).ToString(CultureInfo.InvariantCulture);

        var (exit, output) = await WithWorkerAsync(db.DataSource,
            () => Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "rerun", "--task", Task, "--stale", "--max-cost", cap));

        Assert.True(exit == 0, output);
        Assert.Contains("Stopped at the cost cap", output, StringComparison.Ordinal);
        Assert.Contains("6 of 9 rows not enqueued", output, StringComparison.Ordinal);
        // Three rows afforded, run and paid; the other six neither enqueued nor spent.
        Assert.Equal("3|3", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*), count(*) FILTER (WHERE state = 'succeeded')) FROM llm.job WHERE run_id IS NOT NULL"));
        Assert.True(await SpentAsync(db.DataSource) <= perJob * 3.5m);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')"));
        Assert.Equal("9|3|6|0", await RowsAsync(db.DataSource));

        // pgllm status shows the run, unfinished, with its spend and cap.
        var (_, json) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "status", "--json");
        var shown = Assert.Single(JsonDocument.Parse(json).RootElement.GetProperty("runs").EnumerateArray());
        Assert.Equal(("rerun", 9L, 3L, false), (shown.GetProperty("kind").GetString(), shown.GetProperty("rows").GetInt64(),
                                               shown.GetProperty("succeeded").GetInt64(), shown.GetProperty("finished").GetBoolean()));

        // Run again with a cap for all nine: the same run goes on from where it stopped, its spend counted.
        var bigger = (perJob * 9.5m).ToString(CultureInfo.InvariantCulture);
        (exit, output) = await WithWorkerAsync(db.DataSource,
            () => Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "rerun", "--task", Task, "--stale", "--max-cost", bigger));

        Assert.True(exit == 0, output);
        Assert.Contains("Resuming re-run", output, StringComparison.Ordinal);
        Assert.Contains("3 of 9 rows walked", output, StringComparison.Ordinal);
        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.run"));
        Assert.Equal("9|9", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*), count(DISTINCT row_key)) FROM llm.job WHERE run_id IS NOT NULL"));
        Assert.Equal("9|9|0|0", await RowsAsync(db.DataSource));
        Assert.True(await SpentAsync(db.DataSource) <= perJob * 9.5m);
    }

    [Fact]
    public async Task A_dry_run_prints_the_rows_and_their_estimate_and_enqueues_nothing()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 1000, 2000)");
        await FilledAndStaleAsync(db.DataSource, rows: 4);
        var jobs = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job");

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "rerun", "--task", Task, "--stale", "--sample", "3", "--dry-run");

        Assert.True(exit == 0, output);
        Assert.Contains("would enqueue 3 stale rows of public.flaky:output", output, StringComparison.Ordinal);
        Assert.Contains("Estimated cost: ", output, StringComparison.Ordinal);
        Assert.Equal(jobs, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.run"));

        // The sample is the same rows every time: the first three in the order of their key's MD5.
        var sample = await db.DataSource.ListAsync<string>($"SELECT row_key::text FROM llm.run_select('{Task}', 'stale', 3, NULL) ORDER BY n");
        Assert.Equal(sample, await db.DataSource.ListAsync<string>($"SELECT row_key::text FROM llm.run_select('{Task}', 'stale', 3, NULL) ORDER BY n"));
        Assert.Equal(sample, await db.DataSource.ListAsync<string>(
            $"SELECT row_key::text FROM llm.plan_rows('{Task}', 'stale') ORDER BY llm.run_order(row_key), row_key::text LIMIT 3"));
    }

    [Theory]
    [InlineData("Say which rows to re-run: exactly one of --stale or --never-filled.")]
    [InlineData("--sample and --percent both pick a subset: give one of them.", "--stale", "--sample", "3", "--percent", "10")]
    [InlineData("--percent must be more than 0 and at most 100.", "--stale", "--percent", "0")]
    [InlineData("--max-cost cannot be negative.", "--stale", "--max-cost", "-1")]
    [InlineData("--sample must be at least 1.", "--stale", "--sample", "0")]
    public async Task Bad_input_is_one_line_on_stderr_and_exit_2(string message, params string[] args)
    {
        var error = new StringWriter();
        var commandLine = new PgLlmCommandLine(PgLlmFixture.Scripts, new TestConsole(), Ops.Configuration(_fixture), error);

        var exit = await commandLine.InvokeAsync(["rerun", "--task", Task, .. args]);

        Assert.Equal(2, exit);
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 2, error.ToString());
        Assert.Equal("error: " + message, lines[0].TrimEnd());
        Assert.Contains("rerun --help' for usage.", lines[1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_backfill_enqueues_at_low_priority_under_a_run()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'); DELETE FROM llm.job");

        await new PgLlmBackfill(db.DataSource).RunAsync(Task);

        Assert.Equal(["{\"id\": 1}|1|t", "{\"id\": 2}|1|t"], await db.DataSource.ListAsync<string>(
            "SELECT concat_ws('|', j.row_key::text, j.priority, j.run_id = r.id) FROM llm.job AS j, llm.run AS r ORDER BY j.row_key"));
        Assert.Equal("backfill|empty|2|2", await db.DataSource.ScalarAsync<string>("SELECT concat_ws('|', kind, selection, rows, enqueued) FROM llm.run"));
    }

    /// <summary>Rows 1..n filled by the task's first definition, then a new definition (same prompt length) that makes them stale.</summary>
    private async Task FilledAndStaleAsync(NpgsqlDataSource db, int rows)
    {
        await db.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'row ' || g FROM generate_series(1, {rows}) AS g");
        await DrainAsync(db);
        await db.ExecAsync($"UPDATE llm.task SET prompt = 'Echa {{input}}', definition_hash = 'second-definition' WHERE name = '{Task}'");
        Assert.Equal($"{rows}|0|{rows}|0", await RowsAsync(db));
    }

    private async Task<T> WithWorkerAsync<T>(NpgsqlDataSource db, Func<Task<T>> action)
    {
        using var stop = new CancellationTokenSource();
        var worker = _fixture.CreateWorker(db).RunAsync(stop.Token);
        try
        {
            return await action();
        }
        finally
        {
            await stop.CancelAsync();
            await worker;
        }
    }

    private async Task DrainAsync(NpgsqlDataSource db)
    {
        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
    }

    private static Task<string> RowsAsync(NpgsqlDataSource db) =>
        db.ScalarAsync<string>($"SELECT concat_ws('|', total, current, stale, never_filled) FROM llm.task_rows('{Task}')");

    private static Task<decimal> SpentAsync(NpgsqlDataSource db) =>
        db.ScalarAsync<decimal>("SELECT coalesce(sum(estimated_cost), 0) FROM llm.job WHERE run_id IS NOT NULL");

    private static Task<List<string>> ClaimAsync(NpgsqlDataSource db, int limit) =>
        db.ListAsync<string>($"SELECT row_key::text FROM llm.claim('test', {limit}, 60, NULL, NULL) ORDER BY id");

    /// <summary>The claim's query as its function plans it (generic plan, its planner settings).</summary>
    private static async Task<string> ClaimPlanAsync(NpgsqlDataSource db)
    {
        await using var connection = await db.OpenConnectionAsync();
        await using (var settings = new NpgsqlCommand(
            "SET enable_sort = off; SET enable_bitmapscan = off; SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;" +
            "PREPARE claim_ids(integer, text[], text[]) AS SELECT c.id FROM llm.job AS c WHERE c.state = 'pending' AND c.scheduled_at <= now() " +
            "AND ($2 IS NULL OR c.task = ANY ($2)) AND ($3 IS NULL OR c.task <> ALL ($3)) ORDER BY c.priority, c.scheduled_at, c.id LIMIT $1 FOR UPDATE SKIP LOCKED",
            connection))
        {
            await settings.ExecuteNonQueryAsync();
        }

        await using var explain = new NpgsqlCommand("EXPLAIN EXECUTE claim_ids(10, NULL, NULL)", connection);
        var lines = new List<string>();
        await using var reader = await explain.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            lines.Add(reader.GetString(0));
        }

        return string.Join('\n', lines);
    }
}
