using PgLlm.Local;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// The in-database worker spends no call on a table that drifted after its migration: a missing table or
/// column fails the job at once as permanent, with a message naming it, and a write-back that meets a changed
/// table is permanent too, not a transient failure that would pay for the call again. The table here is
/// <c>items</c> (key id, reads input, fills output; three attempts).
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseTableCheckTests
{
    private readonly InDatabaseFixture _fixture;

    public InDatabaseTableCheckTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_dropped_target_column_fails_the_job_for_good_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'a')");
        // The table's edit trigger depends on its targets: it goes with the column (a migration puts it back).
        await db.ExecAsync("ALTER TABLE items DROP COLUMN output CASCADE");

        await AssertFailedWithoutCallsAsync(db,
            "public.items: column output (target of task output) is missing; `pgllm migrate` prints the DDL that fixes it");
    }

    [Fact]
    public async Task A_dropped_read_column_fails_the_job_for_good_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'a')");
        // The task's triggers depend on the column: they go with it; the job already queued stays.
        await db.ExecAsync("ALTER TABLE items DROP COLUMN input CASCADE");

        await AssertFailedWithoutCallsAsync(db,
            "public.items: column input (read by task output) is missing; `pgllm migrate` prints the DDL that fixes it");
    }

    [Fact]
    public async Task A_renamed_table_fails_the_job_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'a')");
        await db.ExecAsync("ALTER TABLE items RENAME TO items_old");

        await AssertFailedWithoutCallsAsync(db, "public.items: table is missing (dropped or renamed since it was migrated?)");
    }

    [Fact]
    public async Task A_write_back_that_meets_a_changed_table_is_permanent_and_pays_for_no_second_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'a')");
        // The column goes while the model answers (with the edit trigger that depends on it): the claim's check passed,
        // the write-back cannot succeed.
        _fixture.Model.Responder = request =>
        {
            db.ExecAsync("ALTER TABLE items DROP COLUMN output CASCADE").GetAwaiter().GetResult();
            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal(1, _fixture.Model.RequestCount);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(["permanent"], await db.ListAsync<string>("SELECT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e"));
        var error = await db.ScalarAsync<string>("SELECT last_error FROM llm.job");
        Assert.StartsWith("the table no longer fits the task: ", error, StringComparison.Ordinal);
        Assert.EndsWith("(42703)", error, StringComparison.Ordinal);
        // The paid call's tokens are counted although nothing was written.
        Assert.True(await db.ScalarAsync<int>("SELECT input_tokens FROM llm.job") > 0);
    }

    /// <summary>The one job failed on its first attempt as permanent with <paramref name="expected"/>, and no request reached the model.</summary>
    private async Task AssertFailedWithoutCallsAsync(Npgsql.NpgsqlDataSource db, string expected)
    {
        Assert.Equal(0, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal(["permanent"], await db.ListAsync<string>("SELECT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e"));
        Assert.Equal(expected, await db.ScalarAsync<string>("SELECT last_error FROM llm.job"));
    }
}
