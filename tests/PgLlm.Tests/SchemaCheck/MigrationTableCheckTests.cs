using Npgsql;
using PgLlm.Generated;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.SchemaCheck;

/// <summary>
/// The migrator compares each declared table with the database after the application's scripts and
/// before anything of PgLlm's: one line per problem with the DDL that fixes it, and nothing applied.
/// The table here is <c>flaky</c> (key id, reads input, fills output: a string).
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class MigrationTableCheckTests
{
    private readonly PgLlmFixture _fixture;

    public MigrationTableCheckTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_missing_table_is_named_with_a_create_table_of_the_records_types_and_nothing_is_applied()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(db, [PgLlmScripts.Flaky]).MigrateAsync());

        Assert.Equal("public.flaky: table is missing: CREATE TABLE public.flaky (id bigint PRIMARY KEY, input text, output text);", error.Message);
        Assert.Equal([error.Message], error.Problems);
        Assert.Null(error.InnerException);
        // Not even the journal: no application script ran, so the llm schema was never created.
        Assert.False(await db.ScalarAsync<bool>("SELECT to_regnamespace('llm') IS NOT NULL"));
    }

    [Fact]
    public async Task Quoted_names_are_quoted_in_the_message_and_its_ddl()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(db, [PgLlmScripts.CustomerNote]).MigrateAsync());

        Assert.Equal(
            "\"CRM Data\".\"Customer Notes\": table is missing: CREATE TABLE \"CRM Data\".\"Customer Notes\" " +
            "(\"NoteId\" uuid PRIMARY KEY, \"NoteText\" text, \"Summary Of \"\"Note\"\"\" text);",
            error.Message);
    }

    [Fact]
    public async Task A_missing_key_column_is_named_and_nothing_of_PgLlms_is_applied()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, "CREATE TABLE flaky (ident bigint PRIMARY KEY, input text NOT NULL, output text)");

        Assert.Equal("public.flaky: key column id is missing: ALTER TABLE public.flaky ADD COLUMN id bigint;", error.Message);
        await AssertNothingAppliedButTheApplicationScriptAsync(db);
    }

    [Theory]
    [InlineData("CREATE TABLE flaky (id bigint, input text NOT NULL, output text)")]
    [InlineData("CREATE TABLE flaky (id bigint, input text NOT NULL, output text); CREATE UNIQUE INDEX ON flaky (id) WHERE id > 0")]
    [InlineData("CREATE TABLE flaky (id bigint, input text NOT NULL, output text); CREATE UNIQUE INDEX ON flaky (id, input)")]
    public async Task A_key_without_a_primary_key_or_whole_unique_index_on_it_is_refused(string ddl)
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, ddl);

        Assert.Equal(
            "public.flaky: key (id) is not unique (no primary key or unique index on it), so one answer could be written to several rows: " +
            "ALTER TABLE public.flaky ADD PRIMARY KEY (id);",
            error.Message);
        await AssertNothingAppliedButTheApplicationScriptAsync(db);
    }

    [Fact]
    public async Task A_unique_index_on_the_key_is_enough()
    {
        await using var db = await EmptyDatabaseAsync();

        await new PgLlmMigrator(db, [Application("CREATE TABLE flaky (id bigint NOT NULL, input text NOT NULL, output text); CREATE UNIQUE INDEX ON flaky (id)"), PgLlmScripts.Flaky]).MigrateAsync();

        Assert.True(await db.ScalarAsync<bool>("SELECT to_regclass('llm.job') IS NOT NULL"));
    }

    [Fact]
    public async Task A_missing_read_column_is_named_with_the_task_that_reads_it()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, "CREATE TABLE flaky (id bigint PRIMARY KEY, output text)");

        Assert.Equal("public.flaky: column input (read by task output) is missing: ALTER TABLE public.flaky ADD COLUMN input text;", error.Message);
        await AssertNothingAppliedButTheApplicationScriptAsync(db);
    }

    [Fact]
    public async Task A_missing_target_column_is_named_with_its_task_and_type()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, "CREATE TABLE flaky (id bigint PRIMARY KEY, input text NOT NULL)");

        Assert.Equal("public.flaky: column output (target of task output, string) is missing: ALTER TABLE public.flaky ADD COLUMN output text;", error.Message);
        await AssertNothingAppliedButTheApplicationScriptAsync(db);
    }

    [Fact]
    public async Task A_string_target_in_an_integer_column_is_refused_with_the_alter_that_fixes_it()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, "CREATE TABLE flaky (id bigint PRIMARY KEY, input text NOT NULL, output integer)");

        Assert.Equal(
            "public.flaky: column output (target of task output, string) is integer, which cannot hold a string answer: " +
            "ALTER TABLE public.flaky ALTER COLUMN output TYPE text USING output::text;",
            error.Message);
        await AssertNothingAppliedButTheApplicationScriptAsync(db);
    }

    [Fact]
    public async Task Every_problem_is_one_line_and_the_fixes_it_names_make_the_migration_pass()
    {
        await using var db = await EmptyDatabaseAsync();

        var error = await MigrateFailingAsync(db, "CREATE TABLE flaky (id bigint PRIMARY KEY, output integer)");

        Assert.Equal(
            [
                "public.flaky: column input (read by task output) is missing: ALTER TABLE public.flaky ADD COLUMN input text;",
                "public.flaky: column output (target of task output, string) is integer, which cannot hold a string answer: " +
                "ALTER TABLE public.flaky ALTER COLUMN output TYPE text USING output::text;",
            ],
            error.Message.Split('\n'));

        // The DDL in the message is what fixes the table.
        foreach (var line in error.Problems)
        {
            await db.ExecAsync(line[(line.IndexOf(": ALTER", StringComparison.Ordinal) + 2)..]);
        }

        await new PgLlmMigrator(db, [Application("CREATE TABLE flaky (id bigint PRIMARY KEY, output integer)"), PgLlmScripts.Flaky]).MigrateAsync();
        Assert.True(await db.ScalarAsync<bool>("SELECT to_regclass('llm.job') IS NOT NULL"));
    }

    [Fact]
    public async Task A_table_created_by_an_application_script_of_the_same_run_passes_the_check()
    {
        await using var db = await EmptyDatabaseAsync();

        var result = await new PgLlmMigrator(db, [Application("CREATE TABLE flaky (id bigint PRIMARY KEY, input text NOT NULL, output text)"), PgLlmScripts.Flaky]).MigrateAsync();

        Assert.Equal("0001-flaky", result.Applied[0]);
        Assert.Contains(result.Applied, name => name.StartsWith(PgLlmScripts.Flaky.Stream + "@", StringComparison.Ordinal));
        // The task's INSERT and UPDATE triggers, and the table's three that keep edit marks.
        Assert.Equal(5L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.flaky'::regclass AND NOT tgisinternal"));
        // The application script ran once: a second run applies nothing.
        Assert.Empty((await new PgLlmMigrator(db, [Application("CREATE TABLE flaky (id bigint PRIMARY KEY, input text NOT NULL, output text)"), PgLlmScripts.Flaky]).MigrateAsync()).Applied);
    }

    [Fact]
    public async Task Columns_of_wider_types_than_the_answers_pass_the_check()
    {
        await using var db = await EmptyDatabaseAsync();

        // varchar and a domain over text hold strings; a key of another type is not the check's business.
        await new PgLlmMigrator(db, [
            Application("CREATE DOMAIN short_text AS varchar(200); CREATE TABLE flaky (id integer PRIMARY KEY, input varchar(50) NOT NULL, output short_text)"),
            PgLlmScripts.Flaky]).MigrateAsync();

        Assert.True(await db.ScalarAsync<bool>("SELECT to_regclass('llm.job') IS NOT NULL"));
    }

    private static PgLlmScript Application(string sql) => PgLlmScript.Application("0001-flaky", sql);

    private static async Task<PgLlmMigrationException> MigrateFailingAsync(NpgsqlDataSource db, string createTable) =>
        await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(db, [Application(createTable), PgLlmScripts.Flaky]).MigrateAsync());

    /// <summary>The application's script ran (and is journaled); no queue, no task, no trigger.</summary>
    private static async Task AssertNothingAppliedButTheApplicationScriptAsync(NpgsqlDataSource db)
    {
        Assert.True(await db.ScalarAsync<bool>("SELECT to_regclass('public.flaky') IS NOT NULL"));
        Assert.Equal(["0001-flaky"], await db.ListAsync<string>("SELECT script_name FROM llm.migration"));
        Assert.Equal(["migration"], await db.ListAsync<string>("SELECT relname::text FROM pg_class WHERE relnamespace = 'llm'::regnamespace AND relkind = 'r'"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.flaky'::regclass AND NOT tgisinternal"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_proc WHERE pronamespace = 'llm'::regnamespace"));
    }

    private async Task<NpgsqlDataSource> EmptyDatabaseAsync() => NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
}
