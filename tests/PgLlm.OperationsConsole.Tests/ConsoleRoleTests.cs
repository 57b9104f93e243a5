using Microsoft.Extensions.Options;
using Npgsql;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>The console's queries run as pgllm_console: PgLlm's schema, and nothing of the user's tables.</summary>
[Collection(ConsoleGroup.Name)]
public sealed class ConsoleRoleTests(ConsoleFixture fixture)
{
    [Fact]
    public async Task The_console_runs_as_pgllm_console_which_reads_the_queue_but_not_the_user_tables()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync("INSERT INTO tickets (id, body) VALUES (1, 'secret body')");
        await using var console = new ConsoleDatabase(Options.Create(new PgLlmConsoleOptions { ConnectionString = db.ConsoleConnectionString }));

        Assert.Equal("pgllm_console", await console.DataSource.ScalarAsync<string>("SELECT current_user::text"));
        Assert.Equal(1L, await console.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        var refused = await Assert.ThrowsAsync<PostgresException>(() => console.DataSource.ScalarAsync<long>("SELECT count(*) FROM tickets"));
        Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, refused.SqlState);
        // A pooled connection that went back and forth keeps the role (the pool's reset keeps the session's default).
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("pgllm_console", await console.DataSource.ScalarAsync<string>("SELECT current_user::text"));
        }

        var overview = await ConsoleQueries.ReadOverviewAsync(console.DataSource);
        Assert.Equal(["public.notes:note_summary", "public.tickets:ticket_category"], overview.Select(t => t.Task));
        Assert.Equal(1L, overview.Single(t => t.Task == "public.tickets:ticket_category").Pending);
        var history = await ConsoleQueries.ReadRowHistoryAsync(console.DataSource, "public.tickets:ticket_category", "{\"id\": 1}");
        Assert.Equal("pending", Assert.Single(history).State);
        Assert.Empty(await ConsoleQueries.ReadEditedCellsAsync(console.DataSource, "public.tickets:ticket_category", "{\"id\": 1}"));
        Assert.Equal([("public.tickets:ticket_category", false)], await ConsoleQueries.ReadOverviewTasksOfTableAsync(console.DataSource, "public.tickets:ticket_category"));
    }

    [Fact]
    public async Task An_action_that_fails_is_not_logged_and_one_that_commits_is()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await using var console = new ConsoleDatabase(Options.Create(new PgLlmConsoleOptions { ConnectionString = db.ConsoleConnectionString }));

        await Assert.ThrowsAsync<PostgresException>(() => ConsoleActions.PauseAsync(console.DataSource, "olivia", "no_such_task"));
        Assert.Equal(0L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.console_action"));

        Assert.True(await ConsoleActions.PauseAsync(console.DataSource, "olivia", "public.notes:note_summary"));
        Assert.Equal("olivia|pause|public.notes:note_summary", await db.Owner.ScalarAsync<string>("SELECT concat_ws('|', actor, action, target) FROM llm.console_action"));
    }

    [Fact]
    public void A_bare_row_key_is_read_for_a_one_column_key_and_a_composite_one_needs_json()
    {
        Assert.Equal("{\"id\":42}", ConsoleQueries.NormalizeRowKey("42", ["id"]));
        Assert.Equal("{\"code\":\"ab-1\"}", ConsoleQueries.NormalizeRowKey("ab-1", ["code"]));
        Assert.Equal("{\"a\": 1, \"b\": 2}", ConsoleQueries.NormalizeRowKey("{\"a\": 1, \"b\": 2}", ["a", "b"]));
        Assert.Null(ConsoleQueries.NormalizeRowKey("  ", ["id"]));
        Assert.Throws<FormatException>(() => ConsoleQueries.NormalizeRowKey("1", ["a", "b"]));
    }
}
