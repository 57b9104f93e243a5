using Npgsql;
using PgLlm.Queue;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Operations;

/// <summary>Backfill enqueues existing rows in batches, resumes after an interruption, and never doubles a job.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class BackfillTests
{
    private const string Flaky = "public.flaky:output";
    private const string LineItems = "public.line_items:category";
    private readonly PgLlmFixture _fixture;

    public BackfillTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    /// <summary>Rows that predate the task: inserted, then their trigger-made jobs removed.</summary>
    private static async Task InsertExistingRowsAsync(NpgsqlDataSource db, string sql)
    {
        await db.ExecAsync(sql);
        await db.ExecAsync("DELETE FROM llm.job");
    }

    [Fact]
    public async Task Only_rows_with_an_empty_target_and_every_input_are_enqueued_and_then_filled()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await InsertExistingRowsAsync(db.DataSource, "INSERT INTO flaky (id, input, output) VALUES (1, 'a', NULL), (2, 'b', 'done already'), (3, 'c', NULL)");

        var result = await new PgLlmBackfill(db.DataSource).RunAsync(Flaky, batchSize: 2);

        Assert.True(result.Done);
        Assert.Equal(3, result.TotalScanned);
        Assert.Equal(2, result.TotalEnqueued);
        Assert.Equal(["{\"id\": 1}", "{\"id\": 3}"], await db.DataSource.ListAsync<string>("SELECT row_key::text FROM llm.job ORDER BY id"));

        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal("done already", await db.DataSource.ScalarAsync<string>("SELECT output FROM flaky WHERE id = 2"));
    }

    [Fact]
    public async Task All_rows_enqueues_filled_rows_too_but_never_a_second_job_for_a_row_already_queued()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await InsertExistingRowsAsync(db.DataSource, "INSERT INTO flaky (id, input, output) VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')");
        await db.DataSource.ExecAsync("UPDATE flaky SET input = 'b2' WHERE id = 2"); // its trigger queues a job

        var result = await new PgLlmBackfill(db.DataSource).RunAsync(Flaky, onlyEmpty: false);

        Assert.Equal(2, result.TotalEnqueued);
        Assert.Equal(3L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));
        Assert.Equal(3L, await db.DataSource.ScalarAsync<long>("SELECT count(DISTINCT row_key) FROM llm.job"));
    }

    [Fact]
    public async Task An_interrupted_backfill_resumes_after_its_last_batch_on_a_composite_key()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await InsertExistingRowsAsync(db.DataSource,
            "INSERT INTO line_items (order_id, line_no, description) SELECT o, l, 'item ' || o || '/' || l FROM generate_series(1, 3) AS o, generate_series(1, 3) AS l");
        var backfill = new PgLlmBackfill(db.DataSource);

        // Two batches of two, then the process "dies".
        await backfill.RunBatchAsync(LineItems, batchSize: 2);
        var second = await backfill.RunBatchAsync(LineItems, batchSize: 2);
        Assert.False(second.Done);
        Assert.Equal(4, second.TotalScanned);

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "backfill", "--task", LineItems, "--batch-size", "2");

        Assert.Equal(0, exit);
        Assert.Contains("Resuming the backfill of public.line_items:category after 4 rows", output, StringComparison.Ordinal);
        Assert.Contains("9 rows scanned, 9 jobs enqueued", output, StringComparison.Ordinal);
        Assert.Equal(9L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        Assert.Equal(9L, await db.DataSource.ScalarAsync<long>("SELECT count(DISTINCT row_key) FROM llm.job"));
        Assert.Equal(9L, await db.DataSource.ScalarAsync<long>("SELECT scanned FROM llm.backfill WHERE task = $1 AND finished_at IS NOT NULL", LineItems));
    }

    [Fact]
    public async Task A_finished_backfill_starts_over_when_run_again()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await InsertExistingRowsAsync(db.DataSource, "INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        var backfill = new PgLlmBackfill(db.DataSource);
        await backfill.RunAsync(Flaky);
        await db.DataSource.ExecAsync("DELETE FROM llm.job");

        var again = await backfill.RunAsync(Flaky);

        Assert.Equal(2, again.TotalScanned);
        Assert.Equal(2, again.TotalEnqueued);
    }

    [Fact]
    public async Task Hostile_table_and_column_names_are_quoted()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await InsertExistingRowsAsync(db.DataSource,
            "INSERT INTO \"CRM Data\".\"Customer Notes\" (\"NoteId\", \"NoteText\") SELECT gen_random_uuid(), 'note ' || i FROM generate_series(1, 5) AS i");
        var task = await db.DataSource.ScalarAsync<string>("SELECT name FROM llm.task WHERE table_schema = 'CRM Data'");

        var result = await new PgLlmBackfill(db.DataSource).RunAsync(task, batchSize: 2);

        Assert.Equal(5, result.TotalEnqueued);
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM \"CRM Data\".\"Customer Notes\" WHERE \"Summary Of \"\"Note\"\"\" IS NULL"));
    }

    [Fact]
    public async Task An_unknown_task_is_a_clear_error_in_sql_and_on_the_command_line()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);

        var error = await Assert.ThrowsAsync<PostgresException>(() => new PgLlmBackfill(db.DataSource).RunBatchAsync("public.nope:x"));
        Assert.Equal("22023", error.SqlState);
        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "backfill", "--task", "public.nope:x");

        Assert.Equal(1, exit);
        Assert.Contains("unknown task 'public.nope:x'. Known tasks:", output, StringComparison.Ordinal);
        Assert.Contains(Flaky, output, StringComparison.Ordinal);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.backfill"));
    }
}
