using System.Collections.Immutable;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.Loader;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using PgLlm.Generators;
using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>Runs the generator over source text with a plain <see cref="CSharpGeneratorDriver"/>.</summary>
internal static class GeneratorHarness
{
    private static readonly ImmutableArray<MetadataReference> References = LoadReferences();

    public static CSharpCompilation Compile(params string[] sources) =>
        CSharpCompilation.Create(
            "GeneratorInput",
            sources.Select((s, i) => CSharpSyntaxTree.ParseText(s, CSharpParseOptions.Default.WithLanguageVersion(LanguageVersion.Latest), path: $"Input{i}.cs")),
            References,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

    public static GeneratorDriver CreateDriver() =>
        CSharpGeneratorDriver.Create(
            new[] { new LlmGenerator().AsSourceGenerator() },
            driverOptions: new GeneratorDriverOptions(IncrementalGeneratorOutputKind.None, trackIncrementalGeneratorSteps: true));

    public static GeneratorResult Run(params string[] sources)
    {
        var compilation = Compile(sources);
        var driver = CreateDriver().RunGeneratorsAndUpdateCompilation(compilation, out var output, out var generatorDiagnostics);
        return new GeneratorResult(driver, output, generatorDiagnostics);
    }

    /// <summary>Compiles the generator's output, loads it, and returns its <c>PgLlmScripts.All</c>.</summary>
    public static IReadOnlyList<PgLlmScript> LoadScripts(Compilation output)
    {
        using var stream = new MemoryStream();
        var emit = output.Emit(stream);
        Assert.True(emit.Success, string.Join("\n", emit.Diagnostics));
        stream.Position = 0;
        var context = new AssemblyLoadContext("generated-" + Guid.NewGuid().ToString("N"), isCollectible: true);
        try
        {
            var assembly = context.LoadFromStream(stream);
            var type = assembly.GetType("PgLlm.Generated.PgLlmScripts", throwOnError: true)!;
            return (IReadOnlyList<PgLlmScript>)type.GetProperty("All", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!;
        }
        finally
        {
            context.Unload();
        }
    }

    /// <summary>The folder of this source file, where golden files live.</summary>
    public static string SourceDirectory([CallerFilePath] string path = "") => Path.GetDirectoryName(path)!;

    private static ImmutableArray<MetadataReference> LoadReferences()
    {
        var trusted = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator);
        return trusted
            .Where(p => Path.GetFileName(p).StartsWith("System.", StringComparison.Ordinal) || Path.GetFileName(p) is "mscorlib.dll" or "netstandard.dll")
            .Append(typeof(LlmTableAttribute).Assembly.Location)
            .Distinct()
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p))
            .ToImmutableArray();
    }
}

/// <summary>What one generator run produced.</summary>
internal sealed record GeneratorResult(GeneratorDriver Driver, Compilation Output, ImmutableArray<Diagnostic> GeneratorDiagnostics)
{
    /// <summary>Diagnostics the generator reported.</summary>
    public IReadOnlyList<Diagnostic> Diagnostics => GeneratorDiagnostics;

    /// <summary>Errors of the compilation including the generated code.</summary>
    public IReadOnlyList<Diagnostic> CompilationErrors =>
        Output.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();

    /// <summary>The text of the generated C# file, or null when nothing was generated.</summary>
    public string? GeneratedSource =>
        Driver.GetRunResult().GeneratedTrees.FirstOrDefault(t => t.FilePath.EndsWith("PgLlmScripts.g.cs", StringComparison.Ordinal))?.ToString();
}
