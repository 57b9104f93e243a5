using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>
/// <c>&lt;PgLlmSqlFolder&gt;</c> and <c>&lt;PgLlmSqlDrift&gt;</c> in a real <c>dotnet build</c> of a small
/// consumer project that uses the PgLlm package as NuGet would lay it out: the package is packed from
/// the built src/PgLlm (<c>dotnet pack --no-build</c>) and unzipped, and the consumer references its
/// lib/ assembly and analyzer and imports its build/PgLlm.targets.
/// </summary>
public sealed class SqlFolderBuildTests : IDisposable
{
    private const string Tickets = """
        using PgLlm;

        namespace Consumer;

        [LlmTable("tickets")]
        public sealed record Ticket(long Id, string Body)
        {
            [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
        }
        """;

    private const string Notes = """
        using PgLlm;

        namespace Consumer;

        [LlmTable("notes")]
        public sealed record Note(long Id, string Text)
        {
            [LlmColumn("Translate {Text} to French")] public string? French { get; init; }
        }
        """;

    private static readonly string Configuration =
        typeof(SqlFolderBuildTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";

    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("pgllm-sqlfolder-");

    public void Dispose() => _root.Delete(recursive: true);

    [Fact]
    public async Task The_build_writes_the_sql_folder_keeps_unchanged_files_and_reports_drift_by_file()
    {
        var package = await UnpackedPackageAsync();
        var project = Path.Combine(_root.FullName, "consumer");
        var sql = Path.Combine(project, "Sql");
        Directory.CreateDirectory(sql);
        File.WriteAllText(Path.Combine(project, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <PgLlmSqlFolder>Sql</PgLlmSqlFolder>
              </PropertyGroup>
              <ItemGroup>
                <Reference Include="{Path.Combine(package, "lib", "net10.0", "PgLlm.dll")}" />
                <Analyzer Include="{Path.Combine(package, "analyzers", "dotnet", "cs", "PgLlm.Generators.dll")}" />
              </ItemGroup>
              <Import Project="{Path.Combine(package, "build", "PgLlm.targets")}" />
            </Project>
            """);
        File.WriteAllText(Path.Combine(_root.FullName, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(project, "Ticket.cs"), Tickets);
        File.WriteAllText(Path.Combine(project, "Note.cs"), Notes);
        // The user's own SQL beside the generated files: never PgLlm's to rewrite or delete.
        var own = Path.Combine(sql, "0001-create-tables.sql");
        File.WriteAllText(own, "CREATE TABLE public.tickets (id bigint PRIMARY KEY, body text, summary text);\n");

        // (a) A developer build writes one file per generated script, as PgLlmScriptFolder.Write names and fills them.
        var first = await BuildAsync(project, "-p:PgLlmSqlWrite=true");
        Assert.True(first.ExitCode == 0, first.Output);
        var expected = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Tickets, Notes).Output);
        Assert.Equal(2, expected.Count);
        foreach (var script in expected)
        {
            Assert.Equal(script.Sql, File.ReadAllText(Path.Combine(sql, script.FileName)));
            Assert.Contains($"PgLlm: Sql/{script.FileName} written", first.Output, StringComparison.Ordinal);
        }

        Assert.Empty(PgLlmScriptFolder.Compare(sql, expected));
        var tickets = Path.Combine(sql, "1000-public.tickets.sql");
        var notes = Path.Combine(sql, "1000-public.notes.sql");

        // (d) A change elsewhere rebuilds and runs the folder step again, yet an unchanged file is not rewritten.
        var old = new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(tickets, old);
        File.SetLastWriteTimeUtc(notes, old);
        File.WriteAllText(Path.Combine(project, "Note.cs"), Notes.Replace("to French", "to German", StringComparison.Ordinal));
        var second = await BuildAsync(project, "-p:PgLlmSqlWrite=true");
        Assert.True(second.ExitCode == 0, second.Output);
        Assert.Equal(old, File.GetLastWriteTimeUtc(tickets));
        Assert.Contains("to German", File.ReadAllText(notes), StringComparison.Ordinal);
        Assert.Contains("PgLlm: Sql/1000-public.notes.sql written", second.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("tickets.sql written", second.Output, StringComparison.Ordinal);

        // (b) In CI the build only checks: a hand-edited committed file is a warning naming it, and stays as it is.
        var edited = File.ReadAllText(tickets) + "-- edited by hand\n";
        File.WriteAllText(tickets, edited);
        var ci = await BuildAsync(project, "-p:ContinuousIntegrationBuild=true");
        Assert.True(ci.ExitCode == 0, ci.Output);
        Assert.Contains("1000-public.tickets.sql : warning PGLLM100: Sql/1000-public.tickets.sql differs from the generated script", ci.Output, StringComparison.Ordinal);
        Assert.Contains("dotnet build -p:PgLlmSqlWrite=true", ci.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("notes.sql", ci.Output, StringComparison.Ordinal);
        Assert.Equal(edited, File.ReadAllText(tickets));

        // (c) PgLlmSqlDrift=Error fails the build on the same file (and, by default, does not rewrite it).
        var strict = await BuildAsync(project, "-p:PgLlmSqlDrift=Error");
        Assert.True(strict.ExitCode != 0, strict.Output);
        Assert.Contains("1000-public.tickets.sql : error PGLLM100: Sql/1000-public.tickets.sql differs from the generated script", strict.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("MSB3073", strict.Output, StringComparison.Ordinal);
        Assert.Equal(edited, File.ReadAllText(tickets));

        // A table removed: its generated file is stale (an error in CI), and a developer build deletes it, repairs
        // the hand-edited file, and leaves the user's own file alone.
        File.Delete(Path.Combine(project, "Note.cs"));
        var stale = await BuildAsync(project, "-p:PgLlmSqlDrift=Error");
        Assert.True(stale.ExitCode != 0, stale.Output);
        Assert.Contains("Sql/1000-public.notes.sql is a generated script that no table produces any more", stale.Output, StringComparison.Ordinal);
        var repaired = await BuildAsync(project, "-p:PgLlmSqlWrite=true");
        Assert.True(repaired.ExitCode == 0, repaired.Output);
        Assert.False(File.Exists(notes));
        Assert.Contains("PgLlm: Sql/1000-public.notes.sql deleted", repaired.Output, StringComparison.Ordinal);
        Assert.Equal(expected.Single(s => s.FileName == "1000-public.tickets.sql").Sql, File.ReadAllText(tickets));
        Assert.True(File.Exists(own));
        Assert.Equal(["0001-create-tables.sql", "1000-public.tickets.sql"], Directory.GetFiles(sql).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    /// <summary>Packs the built src/PgLlm (this test run's configuration) and unzips it, as NuGet would extract it.</summary>
    private async Task<string> UnpackedPackageAsync()
    {
        var feed = Path.Combine(_root.FullName, "feed");
        var pack = await DotnetAsync(_root.FullName, "pack", Path.Combine(RepositoryRoot, "src", "PgLlm", "PgLlm.csproj"), "-c", Configuration, "--no-build", "-o", feed,
            // The .nuspec goes to this test's folder, not src/PgLlm/obj, where another pack may be writing its own.
            $"-p:NuspecOutputPath={Path.Combine(_root.FullName, "nuspec")}{Path.DirectorySeparatorChar}");
        Assert.True(pack.ExitCode == 0, pack.Output);
        var package = Path.Combine(_root.FullName, "package");
        ZipFile.ExtractToDirectory(Directory.GetFiles(feed, "PgLlm.*.nupkg").Single(), package);
        Assert.True(File.Exists(Path.Combine(package, "tools", "sql", "PgLlm.SqlFolder.dll")), "the package carries the SQL folder tool");
        Assert.True(File.Exists(Path.Combine(package, "buildTransitive", "PgLlm.targets")), "the package carries buildTransitive/PgLlm.targets");
        return package;
    }

    private static string RepositoryRoot => Path.GetFullPath(Path.Combine(GeneratorHarness.SourceDirectory(), "..", ".."));

    private static Task<(int ExitCode, string Output)> BuildAsync(string project, params string[] properties) =>
        DotnetAsync(project, ["build", "-c", "Release", "-tl:off", "-nologo", "--disable-build-servers", .. properties]);

    private static async Task<(int ExitCode, string Output)> DotnetAsync(string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        // The test host inherits the outer build's MSBuild settings; the consumer's build starts clean.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        return (process.ExitCode, $"dotnet {string.Join(' ', arguments)} exited {process.ExitCode}:\n{await output}\n{await errors}");
    }
}
