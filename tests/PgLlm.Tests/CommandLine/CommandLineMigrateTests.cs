using Npgsql;
using PgLlm.Cli;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;
using Spectre.Console.Testing;

namespace PgLlm.Tests.CommandLine;

/// <summary><c>pgllm migrate</c> as a user meets it: the table check's lines on stderr, and a <c>postgres://</c> URL as <c>--connection</c>.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class CommandLineMigrateTests(PgLlmFixture fixture)
{
    [Fact]
    public async Task Migrate_without_the_tables_prints_each_problem_with_its_ddl_on_its_own_error_line_and_exits_1()
    {
        await using var db = await Ops.CreateDatabaseAsync(fixture, migrate: false);
        var console = new TestConsole().Width(80);
        using var error = new StringWriter();
        // The tables' scripts without the application scripts that create the tables.
        var withoutTables = PgLlmFixture.Scripts.Where(s => s.Kind != PgLlmScriptKind.Application);
        var commandLine = new PgLlmCommandLine(withoutTables, console, Ops.Configuration(fixture), error);

        var exit = await commandLine.InvokeAsync(["migrate", "--connection", db.ConnectionString], CancellationToken.None);

        Assert.Equal(1, exit);
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length > 1, error.ToString());
        Assert.All(lines, line => Assert.Matches(@"^error: .+: table is missing: CREATE TABLE .+\);$", line));
        Assert.Contains("error: public.flaky: table is missing: CREATE TABLE public.flaky (id bigint PRIMARY KEY, input text, output text);", lines);
        Assert.DoesNotContain("   at ", error.ToString(), StringComparison.Ordinal);
        Assert.False(await db.DataSource.ScalarAsync<bool>("SELECT to_regnamespace('llm') IS NOT NULL"));
    }

    [Fact]
    public async Task A_postgres_url_works_as_the_connection()
    {
        await using var db = await Ops.CreateDatabaseAsync(fixture);
        var keywords = new NpgsqlConnectionStringBuilder(db.ConnectionString);
        var password = string.IsNullOrEmpty(keywords.Password) ? string.Empty : ":" + Uri.EscapeDataString(keywords.Password);
        var url = $"postgres://{Uri.EscapeDataString(keywords.Username!)}{password}@{keywords.Host}:{keywords.Port}/{Uri.EscapeDataString(keywords.Database!)}";

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(fixture), url, "status", "--json");

        Assert.True(exit == 0, output);
        Assert.Contains("public.flaky:output", output, StringComparison.Ordinal);
    }
}
