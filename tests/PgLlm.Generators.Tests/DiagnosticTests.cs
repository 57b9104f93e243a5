using Microsoft.CodeAnalysis;

namespace PgLlm.Generators.Tests;

/// <summary>One test per diagnostic: the ID, the severity, the message and where it points.</summary>
public sealed class DiagnosticTests
{
    [Fact]
    public void PGLLM001_unknown_placeholder_points_at_the_prompt()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Bodyy}")] public string? Summary { get; init; }
            }
            """, "PGLLM001");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Contains("'{Bodyy}'", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        Assert.Equal("\"Summarize {Bodyy}\"", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM002_task_that_reads_its_own_target()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            [LlmTask("Improve {Summary}", nameof(Summary))]
            public sealed record T(long Id, string? Summary);
            """, "PGLLM002");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal("\"Improve {Summary}\"", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM003_table_without_key()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(string Body)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
            }
            """, "PGLLM003");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal("LlmTable(\"t\")", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM004_unknown_target()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            [LlmTask("Summarize {Body}", "Sumary")]
            public sealed record T(long Id, string Body, string? Summary);
            """, "PGLLM004");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Contains("'Sumary'", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Summarize {Body")]
    [InlineData("Summarize Body}")]
    [InlineData("Summarize {} {Body}")]
    public void PGLLM005_malformed_braces(string prompt)
    {
        var (diagnostic, source) = Single($$"""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("{{prompt}}")] public string? Summary { get; init; }
            }
            """, "PGLLM005");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
    }

    [Fact]
    public void PGLLM006_prompt_without_placeholder_is_a_warning_and_still_generates()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            public sealed record T(long Id)
            {
                [LlmColumn("Tell a joke")] public string? Joke { get; init; }
            }
            """));

        var diagnostic = Assert.Single(result.Diagnostics);
        Assert.Equal("PGLLM006", diagnostic.Id);
        Assert.Equal(DiagnosticSeverity.Warning, diagnostic.Severity);
        Assert.Contains("public.t:joke", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM007_two_tasks_with_one_name()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            [LlmTask("A {Body}", nameof(X), Name = "same")]
            [LlmTask("B {Body}", nameof(Y), Name = "same")]
            public sealed record T(long Id, string Body, string? X, string? Y);
            """, "PGLLM007");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
    }

    [Fact]
    public void PGLLM008_task_writing_a_key_column()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            [LlmTask("Pick an id for {Body}", nameof(Id))]
            public sealed record T(long Id, string Body);
            """, "PGLLM008");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
    }

    [Fact]
    public void PGLLM009_invalid_max_attempts()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}", MaxAttempts = 0)] public string? Summary { get; init; }
            }
            """, "PGLLM009");

        Assert.Equal("MaxAttempts = 0", SourceOf(diagnostic, source));
    }

    [Fact]
    public void A_type_with_an_error_generates_no_script_for_its_table()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("broken")]
            public sealed record Broken(long Id, string Body)
            {
                [LlmColumn("Summarize {Nope}")] public string? Summary { get; init; }
            }

            [LlmTable("fine")]
            public sealed record Fine(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
            }
            """));

        Assert.Contains(result.Diagnostics, d => d.Id == "PGLLM001");
        Assert.Contains("1000-public.fine", result.GeneratedSource, StringComparison.Ordinal);
        Assert.DoesNotContain("public.broken", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Fact]
    public void Placeholders_may_name_the_property_or_the_column_and_targets_too()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            [LlmTask("{Body} / {review_body}", "summary")]
            public sealed record T(long Id, [property: System.ComponentModel.DataAnnotations.Schema.Column("review_body")] string Body, string? Summary);
            """));

        Assert.Empty(result.Diagnostics);
        Assert.Contains("{review_body} / {review_body}", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("ReviewText", "review_text")]
    [InlineData("Id", "id")]
    [InlineData("ImageURL", "image_url")]
    [InlineData("HTTPStatusCode", "http_status_code")]
    [InlineData("Item2Name", "item2_name")]
    [InlineData("already_snake", "already_snake")]
    public void Column_names_are_the_snake_case_of_property_names(string property, string column) =>
        Assert.Equal(column, LlmGenerator.Parser.SnakeCase(property));

    private static (Diagnostic Diagnostic, string Source) Single(string source, string id)
    {
        var wrapped = Wrap(source);
        var result = GeneratorHarness.Run(wrapped);
        var diagnostic = Assert.Single(result.Diagnostics, d => d.Id == id);
        Assert.Equal("PgLlm", diagnostic.Descriptor.Category);
        Assert.EndsWith("#" + id.ToLowerInvariant(), diagnostic.Descriptor.HelpLinkUri, StringComparison.Ordinal);
        Assert.NotEqual(Location.None, diagnostic.Location);
        Assert.Equal("Input0.cs", diagnostic.Location.GetLineSpan().Path);
        return (diagnostic, wrapped);
    }

    /// <summary>The source text a diagnostic's location covers.</summary>
    private static string SourceOf(Diagnostic diagnostic, string source)
    {
        var span = diagnostic.Location.SourceSpan;
        return source.Substring(span.Start, span.Length);
    }

    private static string Wrap(string declarations) => "using PgLlm;\nnamespace Test;\n" + declarations;
}
