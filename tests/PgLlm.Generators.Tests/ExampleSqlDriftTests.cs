using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>
/// The example commits its generated SQL (examples/Reviews/Sql) so it can be reviewed as SQL. Its
/// build keeps the folder (&lt;PgLlmSqlFolder&gt;, the package's build/PgLlm.targets): a developer build
/// rewrites it, a CI build only warns (PGLLM100). This fails whatever the build did, so a commit with
/// stale SQL fails the tests. PGLLM_UPDATE_GOLDEN=1 rewrites the folder, as `dotnet build examples/Reviews` does.
/// </summary>
public sealed class ExampleSqlDriftTests
{
    [Fact]
    public void The_committed_sql_of_the_reviews_example_matches_the_generator()
    {
        var example = Path.GetFullPath(Path.Combine(GeneratorHarness.SourceDirectory(), "..", "..", "examples", "Reviews"));
        var sources = Directory.EnumerateFiles(example, "*.cs", SearchOption.TopDirectoryOnly)
            .Where(f => Path.GetFileName(f) != "Program.cs")
            .Select(File.ReadAllText)
            .ToArray();
        var result = GeneratorHarness.Run(sources);
        var scripts = result.Output.GetDiagnostics().Any(d => d.Severity == Microsoft.CodeAnalysis.DiagnosticSeverity.Error && d.Id.StartsWith("PGLLM", StringComparison.Ordinal))
            ? throw new InvalidOperationException("the example's declarations do not compile")
            : GeneratorHarness.LoadScripts(FilterToGenerated(result));
        var folder = Path.Combine(example, "Sql");

        if (Environment.GetEnvironmentVariable("PGLLM_UPDATE_GOLDEN") == "1")
        {
            PgLlmScriptFolder.Write(folder, scripts);
        }

        Assert.Empty(PgLlmScriptFolder.Compare(folder, scripts));
        Assert.Equal(2, scripts.Count);
    }

    /// <summary>The example's other files reference types outside this harness; keep only what the scripts need.</summary>
    private static Microsoft.CodeAnalysis.Compilation FilterToGenerated(GeneratorResult result)
    {
        var generated = result.Driver.GetRunResult().GeneratedTrees;
        return result.Output.RemoveAllSyntaxTrees().AddSyntaxTrees(generated);
    }
}
