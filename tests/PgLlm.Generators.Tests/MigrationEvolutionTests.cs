using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>
/// Rebuilding after a declaration changes yields scripts that update tasks and triggers in place,
/// applied against a real PostgreSQL.
/// </summary>
public sealed class MigrationEvolutionTests : IAsyncLifetime
{
    private const string Table = "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL, title text NOT NULL, summary text, mood text);";

    private LocalPostgres _postgres = null!;

    public async Task InitializeAsync() => _postgres = await LocalPostgres.StartAsync();

    public async Task DisposeAsync() => await _postgres.DisposeAsync();

    [Fact]
    public async Task A_changed_prompt_replaces_the_task_and_its_triggers_and_changing_it_back_applies_again()
    {
        await using var db = NpgsqlDataSource.Create(await _postgres.CreateDatabaseAsync());
        var a = Notes("Summarize {Body}");
        var b = Notes("Summarize {Title}: {Body}");

        // The application's script, the queue's numbered migrations, the table's script.
        Assert.Equal(2 + PgLlmQueueMigrations.All.Count, (await MigrateAsync(db, a)).Count);
        Assert.Equal(["1000-public.notes"], (await MigrateAsync(db, b)).Select(PgLlmScript.StreamOf));
        Assert.Equal("Summarize {title}: {body}", await db.ScalarAsync<string>("SELECT prompt FROM llm.task"));
        Assert.Equal("title,body", await db.ScalarAsync<string>("SELECT array_to_string(read_columns, ',') FROM llm.task"));
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgllm:%' AND tgname NOT LIKE 'pgllm:edited%'"));

        // Back to A: a name journal would think A is applied already; the stream journal applies it again.
        Assert.Equal(["1000-public.notes"], (await MigrateAsync(db, a)).Select(PgLlmScript.StreamOf));
        Assert.Equal("Summarize {body}", await db.ScalarAsync<string>("SELECT prompt FROM llm.task"));
        Assert.Empty(await MigrateAsync(db, a));

        // The UPDATE trigger follows the read columns: a title change no longer enqueues.
        await db.ExecAsync("INSERT INTO notes (id, body, title) VALUES (1, 'b', 't')");
        await db.ExecAsync("DELETE FROM llm.job");
        await db.ExecAsync("UPDATE notes SET title = 't2'");
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        await db.ExecAsync("UPDATE notes SET body = 'b2'");
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
    }

    [Fact]
    public async Task A_removed_task_loses_its_triggers_functions_and_registry_row_and_its_pending_jobs_are_skipped()
    {
        await using var db = NpgsqlDataSource.Create(await _postgres.CreateDatabaseAsync());
        var both = Notes("Summarize {Body}", withMood: true);
        await MigrateAsync(db, both);
        await db.ExecAsync("INSERT INTO notes (id, body, title) VALUES (1, 'b', 't')");
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));

        await MigrateAsync(db, Notes("Summarize {Body}"));

        Assert.Equal(["public.notes:summary"], await db.ListAsync<string>("SELECT name FROM llm.task"));
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgllm:%' AND tgname NOT LIKE 'pgllm:edited%'"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_proc WHERE proname LIKE 'public.notes:mood:%'"));
        Assert.Equal("skipped", await db.ScalarAsync<string>("SELECT state FROM llm.job WHERE task = 'public.notes:mood'"));
    }

    [Fact]
    public async Task Hostile_names_apply_and_enqueue()
    {
        await using var db = NpgsqlDataSource.Create(await _postgres.CreateDatabaseAsync());
        var table = PgLlmScript.Application("0001-order-lines", """"
            CREATE SCHEMA "Sales ""EU""";
            CREATE TABLE "Sales ""EU"""."Order Lines" (
                tenant_id integer, line_no bigint, "Item Name" text NOT NULL, quantity integer NOT NULL,
                "Category's ""Label""" text, shelf_days integer, PRIMARY KEY (tenant_id, line_no));
            """");
        var scripts = GeneratorHarness.LoadScripts(GeneratorHarness.Run(GoldenTests.Hostile).Output);
        await new PgLlmMigrator(db, [table, .. scripts]).MigrateAsync();

        await db.ExecAsync("INSERT INTO \"Sales \"\"EU\"\"\".\"Order Lines\" VALUES (1, 2, 'it''s $$ {x}', 3, NULL, NULL)");

        Assert.Equal(
            ["Sales \"EU\".Order Lines:category {\"line_no\": 2, \"tenant_id\": 1}", "Sales \"EU\".Order Lines:shelf_days {\"line_no\": 2, \"tenant_id\": 1}"],
            await db.ListAsync<string>("SELECT task || ' ' || row_key::text FROM llm.job ORDER BY task"));
    }

    private static string Notes(string prompt, bool withMood = false) => $$"""
        using PgLlm;
        namespace Test;
        [LlmTable("notes")]
        {{(withMood ? "[LlmTask(\"Mood of {Body}\", nameof(Mood), Name = \"mood\")]" : string.Empty)}}
        public sealed record Note(long Id, string Body, string Title)
        {
            [LlmColumn("{{prompt}}")] public string? Summary { get; init; }
            public string? Mood { get; init; }
        }
        """;

    private static async Task<IReadOnlyList<string>> MigrateAsync(NpgsqlDataSource db, string source)
    {
        var scripts = GeneratorHarness.LoadScripts(GeneratorHarness.Run(source).Output);
        var result = await new PgLlmMigrator(db, [PgLlmScript.Application("0001-notes", Table), .. scripts]).MigrateAsync();
        return result.Applied;
    }

}
