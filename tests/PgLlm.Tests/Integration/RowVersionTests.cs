using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// Every written value knows its version (queue step 8): the write-back records which task definition last wrote
/// each row (<c>llm.row_version</c>), every definition a task has had is kept (<c>llm.task_definition</c>), and
/// <c>llm.task_rows</c> / <c>llm.plan_rows</c> count and list a task's current, stale and never-filled rows.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class RowVersionTests
{
    private const string Task = "public.flaky:output";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public RowVersionTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task The_write_back_records_each_rows_definition_and_a_changed_definition_makes_them_stale()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'row ' || g FROM generate_series(1, 3) AS g");
        await DrainAsync(db);
        var first = await db.ScalarAsync<string>($"SELECT definition_hash FROM llm.task WHERE name = '{Task}'");

        Assert.Equal(
            [$"{{\"id\": 1}}|{first}|t", $"{{\"id\": 2}}|{first}|t", $"{{\"id\": 3}}|{first}|t"],
            await db.ListAsync<string>(
                "SELECT concat_ws('|', v.row_key::text, v.definition_hash, v.job_id = j.id) FROM llm.row_version AS v " +
                "JOIN llm.job AS j ON j.row_key = v.row_key AND j.state = 'succeeded' ORDER BY v.row_key"));
        Assert.Equal("3|3|0|0", await RowsAsync(db));

        // A row PgLlm never filled (its job gone before it ran), and one holding a value no version names (filled
        // before versions were kept, or by hand).
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (4, 'row 4'); INSERT INTO flaky (id, input, output) VALUES (5, 'row 5', 'typed in');" +
                           "DELETE FROM llm.job WHERE state = 'pending'");
        Assert.Equal("5|3|1|1", await RowsAsync(db));

        // A new definition, as a migration registers it: every row written by the first is stale now.
        await ChangeDefinitionAsync(db, "Echo this: {input}", "second-definition");
        Assert.Equal("5|0|4|1", await RowsAsync(db));
        Assert.Equal(
            ["{\"id\": 1}|" + first, "{\"id\": 2}|" + first, "{\"id\": 3}|" + first, "{\"id\": 5}|"],
            await db.ListAsync<string>($"SELECT concat_ws('|', row_key::text, coalesce(definition_hash, '')) FROM llm.plan_rows('{Task}', 'stale')"));
        Assert.Equal(["{\"id\": 4}"], await db.ListAsync<string>($"SELECT row_key::text FROM llm.plan_rows('{Task}', 'never_filled')"));
        Assert.Equal(["{\"id\": 1}", "{\"id\": 2}"], await db.ListAsync<string>($"SELECT row_key::text FROM llm.plan_rows('{Task}', 'stale', 2)"));
        Assert.Equal(
            [$"{first}|Echo {{input}}", "second-definition|Echo this: {input}"],
            await db.ListAsync<string>($"SELECT concat_ws('|', definition_hash, prompt) FROM llm.task_definition WHERE task = '{Task}' ORDER BY registered_at, definition_hash"));

        // A row run again is written by the new definition.
        await db.ExecAsync("UPDATE flaky SET input = 'row 1 again' WHERE id = 1");
        await DrainAsync(db);
        Assert.Equal("5|1|3|1", await RowsAsync(db));
        Assert.Equal("second-definition", await db.ScalarAsync<string>("SELECT definition_hash FROM llm.row_version WHERE row_key = '{\"id\": 1}'"));
    }

    [Fact]
    public async Task A_superseded_answer_records_no_version_and_a_removed_task_keeps_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // The call for the first value takes 3 s, so the row changes under it; the one for the new value answers at once.
        _fixture.Model.Responder = request => ModelReply.Json($"{{\"output\": \"for {request.UserText}\"}}")
            .WithDelay(request.UserText.Contains("old", StringComparison.Ordinal) ? TimeSpan.FromSeconds(3) : TimeSpan.Zero);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'old')");
        using var stop = new CancellationTokenSource();
        var drain = _fixture.CreateWorker(db).RunAsync(stop.Token);
        try
        {
            await Eventually.TrueAsync(() => _fixture.Model.Requests.Count == 1, "the first call is in flight", Bound);
            await db.ExecAsync("UPDATE flaky SET input = 'new' WHERE id = 1");
            await Eventually.TrueAsync(
                async () => await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'superseded'") == 1
                            && await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')") == 0,
                "the old answer is superseded and the new one written", Bound);
        }
        finally
        {
            await stop.CancelAsync();
            await drain;
        }

        Assert.Equal("for Echo new", await db.ScalarAsync<string>("SELECT output FROM flaky WHERE id = 1"));
        // The version names the job that wrote the row, not the superseded one.
        Assert.Equal(
            await db.ScalarAsync<long>("SELECT id FROM llm.job WHERE state = 'succeeded' AND answer IS NOT NULL ORDER BY id DESC LIMIT 1"),
            await db.ScalarAsync<long>("SELECT job_id FROM llm.row_version"));
        Assert.Equal(1, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'superseded'"));

        await db.ExecAsync($"SELECT llm.forget_undeclared_tasks('public', 'flaky', ARRAY[]::text[])");
        Assert.Equal(0, await db.ScalarAsync<long>($"SELECT count(*) FROM llm.row_version WHERE task = '{Task}'"));
        Assert.Equal(0, await db.ScalarAsync<long>($"SELECT count(*) FROM llm.task_definition WHERE task = '{Task}'"));
    }

    [Fact]
    public async Task Plan_rows_refuses_an_unknown_selection_and_an_unknown_task_in_one_line()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var which = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync($"SELECT * FROM llm.plan_rows('{Task}', 'all')"));
        Assert.Equal("which rows: 'stale' or 'never_filled', not 'all'", which.MessageText);
        var task = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync("SELECT * FROM llm.task_rows('public.nope:x')"));
        Assert.Equal("task public.nope:x is not declared (llm.task has no such row)", task.MessageText);
    }

    private static Task<string> RowsAsync(NpgsqlDataSource db) =>
        db.ScalarAsync<string>($"SELECT concat_ws('|', total, current, stale, never_filled) FROM llm.task_rows('{Task}')");

    private static Task ChangeDefinitionAsync(NpgsqlDataSource db, string prompt, string hash) =>
        db.ExecAsync($"UPDATE llm.task SET prompt = '{prompt}', definition_hash = '{hash}' WHERE name = '{Task}'");

    private async Task DrainAsync(NpgsqlDataSource db)
    {
        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
    }
}
