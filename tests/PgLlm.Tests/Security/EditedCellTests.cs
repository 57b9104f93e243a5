using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Security;

/// <summary>
/// A person's edit is kept (queue step 9): an UPDATE of a target by an application role marks the cell
/// (<c>llm.edited_cell</c>), later answers leave it alone unless the target says Always, Never targets are written
/// only while NULL, the write-back marks nothing, and <c>llm.release_cell</c> lets the next answer write the cell.
/// Owner, worker login and application role as in production (<see cref="SecurityFixture"/>).
/// </summary>
[Collection(SecurityGroup.Name)]
public sealed class EditedCellTests
{
    private const string Sentiment = "public.reviews:sentiment";
    private const string EmotionEs = "public.reviews:emotion_es";
    private const string Triage = "public.triage_notes:triage";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly SecurityFixture _fixture;

    public EditedCellTests(SecurityFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_cell_an_application_role_edits_survives_a_rerun_while_the_other_targets_are_written_until_it_is_released()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"GRANT USAGE ON SCHEMA llm TO {SecurityFixture.App}, {SecurityFixture.Outsider}");
        var id = await db.App.ScalarAsync<long>("INSERT INTO reviews (body) VALUES ('I love this product') RETURNING id");
        var key = $"{{\"id\": {id}}}";
        await DrainAsync(db);
        // The write-back wrote three targets and marked none of them.
        Assert.Equal(DeterministicModel.Sentiment("I love this product"), await db.App.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal(0L, await MarksAsync(db));

        await db.App.ExecAsync("UPDATE reviews SET sentiment = 'mixed, checked by hand' WHERE id = $1", id);
        Assert.Equal(
            [$"public|reviews|{key}|sentiment|{SecurityFixture.App}"],
            await db.Superuser.ListAsync<string>("SELECT concat_ws('|', table_schema, table_name, row_key::text, column_name, edited_by) FROM llm.edited_cell"));
        Assert.Equal(1L, await db.Worker.ScalarAsync<long>("SELECT llm.edited_cells($1)", Sentiment));
        Assert.Equal(0L, await db.Worker.ScalarAsync<long>("SELECT llm.edited_cells($1)", EmotionEs));

        // A new input runs both tasks again: the edited cell stays, the other task's targets take the new answer,
        // and the sentiment job succeeds with the model's answer in its record.
        await db.App.ExecAsync("UPDATE reviews SET body = 'I hate this, it is broken' WHERE id = $1", id);
        await DrainAsync(db);
        Assert.Equal("mixed, checked by hand", await db.App.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal(DeterministicModel.Sentiment("I hate this, it is broken"), await LatestAnswerAsync(db, Sentiment, "sentiment"));
        Assert.Equal(await LatestAnswerAsync(db, EmotionEs, "emotion") + "|" + await LatestAnswerAsync(db, EmotionEs, "body_es"),
            await db.App.ScalarAsync<string>("SELECT emotion || '|' || body_es FROM reviews"));
        Assert.Equal(DeterministicModel.TranslateToSpanish("I hate this, it is broken"), await db.App.ScalarAsync<string>("SELECT body_es FROM reviews"));
        Assert.Equal(1L, await MarksAsync(db));

        // Releasing takes UPDATE on the column: the outsider may not; the application role may, once.
        await PrivilegeTests.AssertDeniedAsync(db.Outsider, $"SELECT llm.release_cell('reviews', '{key}', 'sentiment')");
        Assert.True(await db.App.ScalarAsync<bool>("SELECT llm.release_cell('reviews', $1::jsonb, 'sentiment')", key));
        Assert.False(await db.App.ScalarAsync<bool>("SELECT llm.release_cell('reviews', $1::jsonb, 'sentiment')", key));
        var unknown = await Assert.ThrowsAsync<PostgresException>(() => db.App.ExecAsync("SELECT llm.release_cell('reviews', $1::jsonb, 'nope')", key));
        Assert.Equal("table public.reviews has no column 'nope'", unknown.MessageText);

        await db.App.ExecAsync("UPDATE reviews SET body = 'great service' WHERE id = $1", id);
        await DrainAsync(db);
        Assert.Equal(DeterministicModel.Sentiment("great service"), await db.App.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal(0L, await MarksAsync(db));
    }

    [Fact]
    public async Task Always_overwrites_an_edit_and_never_writes_only_an_empty_cell()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"GRANT SELECT, INSERT, UPDATE, DELETE ON triage_notes TO {SecurityFixture.App}");
        // A value given at INSERT is not an edit, and a Never target keeps it.
        await db.App.ExecAsync("INSERT INTO triage_notes (id, body, memo) VALUES (1, 'first', 'typed at insert'), (2, 'second', NULL)");
        await DrainAsync(db);
        Assert.Equal(
            ["1|label: first|tag: first|typed at insert", "2|label: second|tag: second|memo: second"],
            await NotesAsync(db));
        Assert.Equal(0L, await MarksAsync(db));

        // Only the IfUnedited target is marked: the others are decided by their declaration, not by marks.
        await db.App.ExecAsync("UPDATE triage_notes SET label = 'L by hand', tag = 'T by hand', memo = 'M by hand' WHERE id = 2");
        Assert.Equal(["label"], await db.Superuser.ListAsync<string>("SELECT column_name FROM llm.edited_cell"));
        Assert.Equal(1L, await db.Worker.ScalarAsync<long>("SELECT llm.edited_cells($1)", Triage));

        await db.App.ExecAsync("UPDATE triage_notes SET body = body || ' again'");
        await DrainAsync(db);
        Assert.Equal(
            ["1|label: first again|tag: first again|typed at insert", "2|L by hand|tag: second again|M by hand"],
            await NotesAsync(db));

        // An emptied Never cell is written by the next answer.
        await db.App.ExecAsync("UPDATE triage_notes SET memo = NULL WHERE id = 2");
        await db.App.ExecAsync("UPDATE triage_notes SET body = 'second, third time' WHERE id = 2");
        await DrainAsync(db);
        Assert.Equal("2|L by hand|tag: second, third time|memo: second, third time", (await NotesAsync(db))[1]);

        // A deleted row's marks go with it: a new row of the same key is filled.
        await db.App.ExecAsync("DELETE FROM triage_notes WHERE id = 2");
        Assert.Equal(0L, await MarksAsync(db));
        await db.App.ExecAsync("INSERT INTO triage_notes (id, body) VALUES (2, 'reborn')");
        await DrainAsync(db);
        Assert.Equal("2|label: reborn|tag: reborn|memo: reborn", (await NotesAsync(db))[1]);
        await db.App.ExecAsync("UPDATE triage_notes SET label = 'again by hand' WHERE id = 1");
        Assert.Equal(1L, await MarksAsync(db));
        await db.Owner.ExecAsync("TRUNCATE triage_notes");
        Assert.Equal(0L, await MarksAsync(db));
    }

    [Fact]
    public async Task Marks_and_their_release_work_with_names_that_need_quoting()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"GRANT USAGE ON SCHEMA llm TO {SecurityFixture.App}");
        const string Table = SecurityFixture.HostileTable;
        const string Key = "\"Kéy ID\"";
        const string Summary = "\"Summary 'Σ'\"";
        await db.App.ExecAsync($"INSERT INTO {Table} ({Key}, \"Body \"\"Text\"\"\") VALUES (7, 'a note'), (8, 'another')");
        await DrainAsync(db);
        await db.App.ExecAsync($"UPDATE {Table} SET {Summary} = 'by hand', \"Untouched ✓\" = 'x'");

        Assert.Equal(
            ["Sécurité 'Q'|Ünïcödé \"Notes\"|{\"Kéy ID\": 7}|Summary 'Σ'", "Sécurité 'Q'|Ünïcödé \"Notes\"|{\"Kéy ID\": 8}|Summary 'Σ'"],
            await db.Superuser.ListAsync<string>("SELECT concat_ws('|', table_schema, table_name, row_key::text, column_name) FROM llm.edited_cell ORDER BY row_key"));
        Assert.True(await db.App.ScalarAsync<bool>("SELECT llm.release_cell($1::regclass, $2::jsonb, $3)", Table, "{\"Kéy ID\": 8}", "Summary 'Σ'"));
        await db.App.ExecAsync($"UPDATE {Table} SET \"Body \"\"Text\"\"\" = 'changed'");
        await DrainAsync(db);
        var answer = await db.Superuser.ScalarAsync<string>(
            "SELECT answer ->> 'Summary ''Σ''' FROM llm.job WHERE state = 'succeeded' AND row_key = '{\"Kéy ID\": 8}' ORDER BY id DESC LIMIT 1");
        Assert.Equal(["7|by hand", "8|" + answer], await db.App.ListAsync<string>($"SELECT {Key} || '|' || {Summary} FROM {Table} ORDER BY 1"));
        Assert.NotEqual("by hand", answer);

        await db.App.ExecAsync($"DELETE FROM {Table} WHERE {Key} = 7");
        Assert.Equal(0L, await MarksAsync(db));
    }

    private static Task<long> MarksAsync(SecureDatabase db) => db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.edited_cell");

    private static Task<List<string>> NotesAsync(SecureDatabase db) =>
        db.App.ListAsync<string>("SELECT concat_ws('|', id, label, tag, memo) FROM triage_notes ORDER BY id");

    private static Task<string> LatestAnswerAsync(SecureDatabase db, string task, string target) =>
        db.Superuser.ScalarAsync<string>("SELECT answer ->> $2 FROM llm.job WHERE task = $1 AND state = 'succeeded' ORDER BY id DESC LIMIT 1", task, target);

    private async Task DrainAsync(SecureDatabase db)
    {
        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);
        Assert.Equal(0L, await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state NOT IN ('succeeded')"));
    }
}
