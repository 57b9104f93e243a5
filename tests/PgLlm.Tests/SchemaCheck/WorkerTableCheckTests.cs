using Npgsql;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.SchemaCheck;

/// <summary>
/// A table that drifted after its migration fails its jobs at once as permanent, with the table check's
/// message in last_error, and without a model call. The table here is <c>flaky</c> (key id, reads input,
/// fills output: a string; three attempts).
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class WorkerTableCheckTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;

    public WorkerTableCheckTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_dropped_target_column_fails_the_jobs_for_good_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky DROP COLUMN output CASCADE"); // with the edit trigger, which names the column
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");

        await AssertFailedWithoutCallsAsync(db,
            "public.flaky: column output (target of task output, string) is missing: ALTER TABLE public.flaky ADD COLUMN output text;");
    }

    [Fact]
    public async Task A_dropped_read_column_fails_the_jobs_for_good_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        // The task's triggers depend on the column: they go with it; the jobs already queued stay.
        await db.ExecAsync("ALTER TABLE flaky DROP COLUMN input CASCADE");

        await AssertFailedWithoutCallsAsync(db,
            "public.flaky: column input (read by task output) is missing: ALTER TABLE public.flaky ADD COLUMN input text;");
    }

    [Fact]
    public async Task A_target_changed_to_a_type_that_cannot_hold_the_answer_fails_the_jobs_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("DROP TRIGGER \"pgllm:edited\" ON flaky; ALTER TABLE flaky ALTER COLUMN output TYPE integer USING NULL");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");

        await AssertFailedWithoutCallsAsync(db,
            "public.flaky: column output (target of task output, string) is integer, which cannot hold a string answer: " +
            "ALTER TABLE public.flaky ALTER COLUMN output TYPE text USING output::text;");
    }

    [Fact]
    public async Task A_renamed_table_fails_the_jobs_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        await db.ExecAsync("ALTER TABLE flaky RENAME TO flaky_old");

        await AssertFailedWithoutCallsAsync(db, "public.flaky: table is missing (dropped or renamed since it was migrated?)");
    }

    [Fact]
    public async Task A_write_back_that_fails_because_the_table_drifted_is_permanent_not_transient()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var worker = _fixture.CreateWorker(db);
        using var timeout = new CancellationTokenSource(Bound);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));

        // The worker trusts the table it checked a moment ago: this job's call is spent, its write-back fails.
        await db.ExecAsync("ALTER TABLE flaky DROP COLUMN output CASCADE"); // with the edit trigger, which names the column
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (2, 'b')");
        var calls = _fixture.Model.RequestCount;
        await worker.RunUntilIdleAsync(timeout.Token);

        Assert.Equal(calls + 1, _fixture.Model.RequestCount);
        Assert.Equal("failed|1", await db.ScalarAsync<string>("SELECT state || '|' || attempt FROM llm.job WHERE row_key->>'id' = '2'"));
        Assert.Equal(
            "public.flaky: column output (target of task output, string) is missing: ALTER TABLE public.flaky ADD COLUMN output text;",
            await db.ScalarAsync<string>("SELECT last_error FROM llm.job WHERE row_key->>'id' = '2'"));
        Assert.Equal(["permanent"], await db.ListAsync<string>("SELECT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e WHERE row_key->>'id' = '2'"));
    }

    [Fact]
    public async Task A_table_fixed_after_a_failure_is_worked_again_at_once()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var worker = _fixture.CreateWorker(db);
        using var timeout = new CancellationTokenSource(Bound);
        await db.ExecAsync("ALTER TABLE flaky DROP COLUMN output CASCADE"); // with the edit trigger, which names the column
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        await worker.RunUntilIdleAsync(timeout.Token);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));

        await db.ExecAsync("ALTER TABLE flaky ADD COLUMN output text");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (2, 'b')");
        await worker.RunUntilIdleAsync(timeout.Token);

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job WHERE row_key->>'id' = '2'"));
        Assert.NotNull(await db.ScalarAsync<string?>("SELECT output FROM flaky WHERE id = 2"));
    }

    /// <summary>Runs the worker until idle: every job failed at its first attempt, as permanent, with the message, and no call made.</summary>
    private async Task AssertFailedWithoutCallsAsync(NpgsqlDataSource db, string message)
    {
        var calls = _fixture.Model.RequestCount;
        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(calls, _fixture.Model.RequestCount);
        Assert.NotEmpty(await db.ListAsync<long>("SELECT id FROM llm.job"));
        Assert.Equal(["failed|1"], await db.ListAsync<string>("SELECT DISTINCT state || '|' || attempt FROM llm.job"));
        Assert.Equal([message], await db.ListAsync<string>("SELECT DISTINCT last_error FROM llm.job"));
        Assert.Equal(["permanent"], await db.ListAsync<string>("SELECT DISTINCT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e"));
    }
}
