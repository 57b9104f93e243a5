using Npgsql;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Batches;

/// <summary>
/// The batch tier end to end against the local server's Batch API: a backfill sent through batches fills every row
/// once, with the answers the normal path writes, and records tokens and their cost at batch prices.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class BatchTierTests
{
    private readonly PgLlmFixture _fixture;

    public BatchTierTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_backfill_of_10000_rows_through_the_batch_tier_fills_every_row_once_as_the_normal_path_would_at_batch_prices()
    {
        const int Rows = 10_000;
        await using var model = await LocalModelServer.StartAsync();
        await using var batched = await Ops.CreateDatabaseAsync(_fixture);
        await using var live = await Ops.CreateDatabaseAsync(_fixture);
        foreach (var db in new[] { batched, live })
        {
            await Batch.InsertWithoutJobsAsync(db.DataSource, Rows);
            await db.DataSource.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 2, 8)");
        }

        Assert.True(await batched.DataSource.ScalarAsync<bool>($"SELECT done FROM llm.backfill('{Batch.Task}', true, {Rows + 1}, false, 'batch')"));
        Assert.True(await live.DataSource.ScalarAsync<bool>($"SELECT done FROM llm.backfill('{Batch.Task}', true, {Rows + 1}, false)"));
        Assert.Equal(Rows, await batched.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND priority = 2"));

        await Batch.DrainAsync(batched.DataSource, model, o => o.Batch.MaxLines = 4_000);
        await Batch.DrainAsync(live.DataSource, model);

        // Every row filled once, through three batches of at most 4,000 lines, and no call on the normal path.
        Assert.Equal(Rows, model.Requests.Count(r => r.ViaBatch));
        Assert.Equal(Rows, model.Requests.Count(r => !r.ViaBatch));
        Assert.Equal(3, model.BatchesCreated);
        Assert.Equal(3, model.FileUploads);
        Assert.Equal(["done|3|10000|10000|0|0"], await batched.DataSource.ListAsync<string>(
            "SELECT concat_ws('|', state, count(*), sum(lines), sum(succeeded), sum(failed), sum(missing)) FROM llm.batch GROUP BY state"));
        Assert.Equal($"{Rows}|{Rows}", await batched.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*) FILTER (WHERE state = 'succeeded'), count(DISTINCT row_key)) FROM llm.job"));

        // The same answers as the normal path wrote.
        var answers = "SELECT id || '=' || output FROM flaky ORDER BY id";
        var written = await batched.DataSource.ListAsync<string>(answers);
        Assert.Equal(Rows, written.Count);
        Assert.Equal(await live.DataSource.ListAsync<string>(answers), written);

        // Tokens recorded, priced at half the price (no batch price set).
        var (tokens, cost) = (await batched.DataSource.ScalarAsync<long>("SELECT sum(input_tokens + output_tokens) FROM llm.job"),
                              await batched.DataSource.ScalarAsync<decimal>("SELECT sum(estimated_cost) FROM llm.job"));
        Assert.True(tokens > Rows);
        Assert.Equal(await live.DataSource.ScalarAsync<decimal>("SELECT sum(estimated_cost) FROM llm.job") / 2, cost);
    }

    [Fact]
    public async Task Backfill_and_rerun_with_batch_send_their_jobs_to_the_batch_tier_and_status_shows_the_batches()
    {
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 30);
        var configuration = Ops.Configuration(_fixture);

        var (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "backfill", "--task", Batch.Task, "--batch");
        Assert.True(exit == 0, output);
        Assert.Contains("30 jobs enqueued for the batch tier", output, StringComparison.Ordinal);
        Assert.Equal("30|2|batch", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*), max(j.priority), max(r.tier)) FROM llm.job AS j JOIN llm.run AS r ON r.id = j.run_id"));
        await Batch.DrainAsync(db.DataSource, model);
        Assert.Equal(30L, await Batch.WrittenOnceAsync(db.DataSource));

        // A re-run of the stale rows after a definition change, through the batch tier as well.
        await db.DataSource.ExecAsync($"UPDATE llm.task SET definition_hash = 'changed' WHERE name = '{Batch.Task}'");
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(90)))
        {
            using var worker = Ops.Worker(db.DataSource, Batch.Options(model));
            var running = worker.RunAsync(stop.Token);
            (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "rerun", "--task", Batch.Task, "--stale", "--batch");
            await stop.CancelAsync();
            await running;
        }

        Assert.True(exit == 0, output);
        Assert.Contains("30 rows written, 0 failed", output, StringComparison.Ordinal);
        Assert.Equal(60, model.Requests.Count(r => r.ViaBatch));
        Assert.Equal(0, model.Requests.Count(r => !r.ViaBatch));

        (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "batch", "list");
        Assert.True(exit == 0, output);
        Assert.Contains("Batch 1 done: 30 lines, 30 answered, 0 failed, 0 missing", output, StringComparison.Ordinal);
        Assert.Contains("Batch 2 done: 30 lines, 30 answered, 0 failed, 0 missing", output, StringComparison.Ordinal);
        (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "status", "--json");
        Assert.True(exit == 0, output);
        using var status = System.Text.Json.JsonDocument.Parse(output);
        Assert.Equal(2, status.RootElement.GetProperty("batches").GetArrayLength());
        Assert.Equal("done", status.RootElement.GetProperty("batches")[0].GetProperty("state").GetString());
        (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "batch", "cancel", "99");
        Assert.Equal(1, exit);
        Assert.Contains("unknown batch 99", output, StringComparison.Ordinal);
    }
}

/// <summary>Plumbing of the batch tier's tests.</summary>
internal static class Batch
{
    public const string Task = "public.flaky:output";

    /// <summary>Rows 1..n of the flaky table, inserted without their triggers (no job): a backfill finds them.</summary>
    public static async Task InsertWithoutJobsAsync(NpgsqlDataSource dataSource, int rows)
    {
        await using var connection = await dataSource.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var replica = new NpgsqlCommand("SET LOCAL session_replication_role = replica", connection))
        {
            await replica.ExecuteNonQueryAsync();
        }

        await using (var command = new NpgsqlCommand("INSERT INTO flaky (id, input) SELECT g, 'row ' || g FROM generate_series(1, $1) AS g", connection))
        {
            command.Parameters.AddWithValue(rows);
            await command.ExecuteNonQueryAsync();
        }

        await transaction.CommitAsync();
    }

    /// <summary>
    /// Rows of the flaky table written exactly once: each has one succeeded job, whose inputs are the row's current ones
    /// and whose recorded answer is the row's value.
    /// </summary>
    public static Task<long> WrittenOnceAsync(NpgsqlDataSource dataSource) => dataSource.ScalarAsync<long>(
        "SELECT count(*) FROM flaky AS f " +
        "WHERE (SELECT count(*) FROM llm.job AS j WHERE j.row_key = jsonb_build_object('id', f.id) AND j.state = 'succeeded') = 1 " +
        "AND EXISTS (SELECT 1 FROM llm.job AS j WHERE j.row_key = jsonb_build_object('id', f.id) AND j.state = 'succeeded' " +
        "AND j.answer->>'output' = f.output AND j.inputs_hash = md5(jsonb_build_object('input', f.input)::text))");

    /// <summary>Settings against <paramref name="model"/>: batches polled every 50 ms, sent once their jobs waited 100 ms.</summary>
    public static PgLlmOptions Options(LocalModelServer model, Action<PgLlmOptions>? configure = null)
    {
        var options = TestOptions.For(model);
        options.Batch.PollInterval = TimeSpan.FromMilliseconds(50);
        options.Batch.MaxWait = TimeSpan.FromMilliseconds(100);
        configure?.Invoke(options);
        return options;
    }

    /// <summary>A worker against <paramref name="model"/>, batches polled every 50 ms, drained until idle.</summary>
    public static async Task DrainAsync(NpgsqlDataSource dataSource, LocalModelServer model, Action<PgLlmOptions>? configure = null)
    {
        using var worker = Ops.Worker(dataSource, Options(model, configure));
        using var bound = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await worker.RunUntilIdleAsync(bound.Token);
    }
}
