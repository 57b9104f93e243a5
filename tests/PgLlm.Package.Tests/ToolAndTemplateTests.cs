using Npgsql;
using PgLlm.Local;

namespace PgLlm.Package.Tests;

/// <summary>The command-line tool and the project template, installed from the packed feed as a user would.</summary>
[Collection(PackedPackages.Name)]
public sealed class ToolAndTemplateTests(PackagesFixture packages)
{
    private static readonly TimeSpan Short = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan Build = TimeSpan.FromMinutes(5);

    [Fact]
    public async Task The_tool_installs_from_the_feed_and_pgllm_help_runs()
    {
        var tools = Path.Combine(packages.Root, "tools");
        var install = await packages.DotnetAsync(packages.Root, Build,
            "tool", "install", "PgLlm.Cli", "--tool-path", tools, "--add-source", packages.Feed, "--version", packages.Version);
        Assert.True(install.ExitCode == 0, install.Describe());
        Assert.True(Directory.Exists(Path.Combine(packages.PackagesFolder, "pgllm.cli", packages.Version)) || Directory.Exists(Path.Combine(tools, ".store", "pgllm.cli", packages.Version)),
            "the tool was not installed from the packed feed: " + install.Describe());

        var help = await ProcessRun.RunAsync(Path.Combine(tools, "pgllm"), ["--help"], packages.Root, packages.ConsumerEnvironment, Short);

        Assert.True(help.ExitCode == 0, help.Describe());
        foreach (var command in new[] { "migrate", "worker", "status" })
        {
            Assert.Contains(command, help.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task The_template_creates_an_app_that_builds_against_the_feed_and_fills_a_row()
    {
        // A private template hive: the machine's own template list is left as it was.
        var hive = Path.Combine(packages.Root, "template-hive");
        var install = await packages.DotnetAsync(packages.Root, Short,
            "new", "install", packages.PackagePath("PgLlm.Templates"), "--debug:custom-hive", hive);
        Assert.True(install.ExitCode == 0, install.Describe());

        var app = Path.Combine(packages.Root, "TicketsApp");
        var create = await packages.DotnetAsync(packages.Root, Short, "new", "pgllm", "-o", app, "--debug:custom-hive", hive);
        Assert.True(create.ExitCode == 0, create.Describe());
        var project = File.ReadAllText(Path.Combine(app, "TicketsApp.csproj"));
        Assert.Contains($"<PackageReference Include=\"PgLlm\" Version=\"{packages.Version}\" />", project, StringComparison.Ordinal);
        Assert.Contains($"<PackageReference Include=\"PgLlm.Local\" Version=\"{packages.Version}\" />", project, StringComparison.Ordinal);
        Assert.Contains("dotnet run", File.ReadAllText(Path.Combine(app, "README.md")), StringComparison.Ordinal);

        var build = await packages.DotnetAsync(app, Build, "build", "-c", "Release");
        Assert.True(build.ExitCode == 0, build.Describe());
        // Restored from the packed feed into this run's own packages folder, not from any cache.
        Assert.True(File.Exists(Path.Combine(packages.PackagesFolder, "pgllm", packages.Version, "analyzers", "dotnet", "cs", "PgLlm.Generators.dll")));

        // As its README says: nothing configured, so a throwaway PostgreSQL and the deterministic local model.
        var run = await packages.DotnetAsync(app, Build, "run", "-c", "Release", "--no-build");

        Assert.True(run.ExitCode == 0, run.Describe());
        Assert.Contains("a throwaway PostgreSQL runs at", run.Output, StringComparison.Ordinal);
        // The local model's word list makes "crashes ... slow" negative: the worker wrote the model's answer into the row.
        Assert.Matches(@"Ticket #\d+ sentiment: negative", run.Output);

        // Pointed at a database and an endpoint with PGLLM_*: it starts neither, and the row in that database is filled.
        await using var database = await LocalPostgres.StartAsync();
        await using var model = await LocalModelServer.StartAsync();
        var configured = new Dictionary<string, string?>(packages.ConsumerEnvironment)
        {
            ["PGLLM_CONNECTION"] = database.ConnectionString,
            ["PGLLM_BASE_URL"] = model.BaseUrl.ToString(),
            ["PGLLM_API_KEY"] = model.ApiKey,
            ["PGLLM_MODEL"] = "local-model",
        };
        var configuredRun = await ProcessRun.RunAsync("dotnet", ["run", "-c", "Release", "--no-build"], app, configured, Build);

        Assert.True(configuredRun.ExitCode == 0, configuredRun.Describe());
        Assert.DoesNotContain("throwaway", configuredRun.Output, StringComparison.Ordinal);
        Assert.DoesNotContain(model.ApiKey, configuredRun.Output + configuredRun.Error, StringComparison.Ordinal);
        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync();
        await using var query = new NpgsqlCommand(
            "SELECT t.sentiment, j.state FROM public.tickets t JOIN llm.job j ON j.row_key = jsonb_build_object('id', t.id)", connection);
        await using var reader = await query.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync(), "no ticket with a job in the configured database");
        Assert.Equal("negative", reader.GetString(0));
        Assert.Equal("succeeded", reader.GetString(1));
        Assert.True(model.RequestCount >= 1);
    }
}
