using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace PgLlm.Generators.Tests;

/// <summary>The generator does no work again when nothing it reads changed.</summary>
public sealed class IncrementalTests
{
    // The Diagnostics step records nothing when there is no diagnostic, so it is not required here.
    private static readonly string[] TrackedSteps =
    [
        LlmGenerator.TrackingNames.Parse,
        LlmGenerator.TrackingNames.Tables,
    ];

    [Fact]
    public void A_second_run_on_the_same_compilation_is_fully_cached()
    {
        var compilation = GeneratorHarness.Compile(GoldenTests.Reviews);
        var driver = GeneratorHarness.CreateDriver().RunGenerators(compilation);
        driver = driver.RunGenerators(compilation.Clone());

        AssertAllCachedOrUnchanged(driver);
    }

    [Fact]
    public void An_unrelated_edit_regenerates_nothing()
    {
        var compilation = GeneratorHarness.Compile(GoldenTests.Reviews, "namespace Other; public class Unrelated { }");
        var driver = GeneratorHarness.CreateDriver().RunGenerators(compilation);
        var edited = compilation.ReplaceSyntaxTree(
            compilation.SyntaxTrees.Last(),
            CSharpSyntaxTree.ParseText("namespace Other; public class Unrelated { public int Added { get; set; } }", (CSharpParseOptions)compilation.SyntaxTrees.First().Options, path: "Input1.cs"));
        driver = driver.RunGenerators(edited);

        AssertAllCachedOrUnchanged(driver);
    }

    [Fact]
    public void Typed_and_image_declarations_are_cached_across_an_unrelated_edit()
    {
        var compilation = GeneratorHarness.Compile(TypedOutputTests.Typed, GoldenTests.Hostile, "namespace Other; public class Unrelated { }");
        var driver = GeneratorHarness.CreateDriver().RunGenerators(compilation);
        var edited = compilation.ReplaceSyntaxTree(
            compilation.SyntaxTrees.Last(),
            CSharpSyntaxTree.ParseText("namespace Other; public class Unrelated { public string? Added { get; set; } }", (CSharpParseOptions)compilation.SyntaxTrees.First().Options, path: "Input2.cs"));
        driver = driver.RunGenerators(edited);

        AssertAllCachedOrUnchanged(driver);
        var claims = driver.GetRunResult().Results[0].TrackedSteps.GetValueOrDefault(LlmGenerator.TrackingNames.TableClaims, []);
        Assert.All(claims.SelectMany(r => r.Outputs), o => Assert.True(o.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"claims output was {o.Reason}"));
    }

    [Fact]
    public void Editing_a_description_regenerates()
    {
        var compilation = GeneratorHarness.Compile(TypedOutputTests.Typed);
        var driver = GeneratorHarness.CreateDriver().RunGenerators(compilation);
        var edited = compilation.ReplaceSyntaxTree(
            compilation.SyntaxTrees.First(),
            CSharpSyntaxTree.ParseText(TypedOutputTests.Typed.Replace("taxes included", "with taxes", StringComparison.Ordinal), (CSharpParseOptions)compilation.SyntaxTrees.First().Options, path: "Input0.cs"));
        driver = driver.RunGenerators(edited);

        var tables = driver.GetRunResult().Results[0].TrackedSteps[LlmGenerator.TrackingNames.Tables];
        Assert.Contains(tables.SelectMany(s => s.Outputs), o => o.Reason == IncrementalStepRunReason.Modified);
    }

    [Fact]
    public void Editing_a_prompt_regenerates()
    {
        var compilation = GeneratorHarness.Compile(GoldenTests.Reviews);
        var driver = GeneratorHarness.CreateDriver().RunGenerators(compilation);
        var edited = compilation.ReplaceSyntaxTree(
            compilation.SyntaxTrees.First(),
            CSharpSyntaxTree.ParseText(GoldenTests.Reviews.Replace("this text", "this review", StringComparison.Ordinal), (CSharpParseOptions)compilation.SyntaxTrees.First().Options, path: "Input0.cs"));
        driver = driver.RunGenerators(edited);

        var tables = driver.GetRunResult().Results[0].TrackedSteps[LlmGenerator.TrackingNames.Tables];
        Assert.Contains(tables.SelectMany(s => s.Outputs), o => o.Reason == IncrementalStepRunReason.Modified);
    }

    [Fact]
    public void Models_hold_no_roslyn_objects()
    {
        // Compilation, symbols and syntax nodes in a model would defeat caching and keep compilations alive.
        var modelTypes = typeof(LlmGenerator).Assembly.GetTypes().Where(t => t.Namespace == "PgLlm.Generators.Model");
        foreach (var type in modelTypes)
        {
            foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                var propertyType = property.PropertyType;
                Assert.False(typeof(Compilation).IsAssignableFrom(propertyType), $"{type.Name}.{property.Name}");
                Assert.False(typeof(ISymbol).IsAssignableFrom(propertyType), $"{type.Name}.{property.Name}");
                Assert.False(typeof(SyntaxNode).IsAssignableFrom(propertyType), $"{type.Name}.{property.Name}");
                Assert.False(typeof(Location).IsAssignableFrom(propertyType), $"{type.Name}.{property.Name}");
            }
        }
    }

    private static void AssertAllCachedOrUnchanged(GeneratorDriver driver)
    {
        var result = driver.GetRunResult().Results[0];
        foreach (var step in TrackedSteps)
        {
            Assert.True(result.TrackedSteps.TryGetValue(step, out var runs), $"step {step} was not tracked");
            foreach (var output in runs.SelectMany(r => r.Outputs))
            {
                Assert.True(
                    output.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged,
                    $"step {step} output was {output.Reason}");
            }
        }

        foreach (var output in result.TrackedSteps.GetValueOrDefault(LlmGenerator.TrackingNames.Diagnostics, []).SelectMany(r => r.Outputs))
        {
            Assert.True(output.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"diagnostics output was {output.Reason}");
        }

        foreach (var output in result.TrackedOutputSteps.SelectMany(s => s.Value).SelectMany(r => r.Outputs))
        {
            Assert.True(output.Reason is IncrementalStepRunReason.Cached or IncrementalStepRunReason.Unchanged, $"output was {output.Reason}");
        }
    }
}
