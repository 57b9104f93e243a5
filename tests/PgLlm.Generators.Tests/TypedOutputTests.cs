using System.Text.Json;
using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>
/// The C# type of a target decides its JSON schema, null only where the task allows it (AllowNull: taxes, currency,
/// origin; inside origin the C# type decides); images and model options reach the registry.
/// </summary>
public sealed class TypedOutputTests
{
    internal const string Typed = """
        using System;
        using System.Collections.Generic;
        using System.ComponentModel;
        using PgLlm;

        namespace Shop;

        public enum Mood { Positive, Negative, Neutral, VeryMixed }

        /// <summary>A postal address.</summary>
        /// <param name="City">The city, as written on the note.</param>
        public sealed record Address(string City, [property: Description("ISO 3166 code")] string Country, int? Zip);

        [LlmTable("receipts")]
        [LlmTask("Read the receipt: {ImageUrl}", nameof(Total), nameof(Taxes), nameof(Currency), nameof(PaidOn), Name = "totals",
                 SystemPrompt = "You read receipts.", Temperature = 0.2, MaxOutputTokens = 200, AllowNull = [nameof(Taxes), "currency"])]
        public sealed record Receipt
        {
            public long Id { get; init; }

            [LlmImage]
            public required string ImageUrl { get; init; }

            [LlmImage]
            public byte[]? Scan { get; init; }

            public required string Note { get; init; }

            [Description("The amount paid, taxes included")]
            public decimal? Total { get; init; }

            /// <summary>Taxes on the receipt, as a <see cref="decimal"/> amount.</summary>
            public decimal? Taxes { get; init; }

            public string? Currency { get; init; }

            public DateOnly? PaidOn { get; init; }

            [LlmColumn("Mood of {Note}")]
            public Mood? NoteMood { get; init; }

            [LlmColumn("Rate {Note}")]
            [System.ComponentModel.DataAnnotations.Range(1, 5)]
            public int Stars { get; init; }

            [LlmColumn("Tags and codes of {Note}", Name = "tags")]
            public string[]? Tags { get; init; }

            [LlmColumn("Codes in {Note}")]
            public List<long>? Codes { get; init; }

            [LlmColumn("Where was {Note} written?", AllowNull = true)]
            public Address? Origin { get; init; }

            [LlmColumn("Is {Note} a refund?")]
            public bool IsRefund { get; init; }

            [LlmColumn("When was {Note} written?")]
            public DateTimeOffset? WrittenAt { get; init; }

            [LlmColumn("Describe {Scan} with {Note}")]
            public string? ScanText { get; init; }
        }
        """;

    [Fact]
    public void Typed_generated_code_and_sql_match_golden_files()
    {
        var result = GeneratorHarness.Run(Typed);
        Assert.Empty(result.Diagnostics);
        Assert.Empty(result.CompilationErrors);
        GoldenFiles.Verify("Typed/PgLlmScripts.g.cs", result.GeneratedSource!);
        foreach (var script in GeneratorHarness.LoadScripts(result.Output).Where(s => s.Kind == PgLlmScriptKind.Table))
        {
            GoldenFiles.Verify($"Typed/{script.FileName}", script.Sql);
        }
    }

    [Theory]
    [InlineData("total", """{"type":"number","description":"The amount paid, taxes included"}""")]
    [InlineData("taxes", """{"type":["number","null"],"description":"Taxes on the receipt, as a Decimal amount."}""")]
    [InlineData("currency", """{"type":["string","null"]}""")]
    [InlineData("paid_on", """{"type":"string","format":"date"}""")]
    [InlineData("note_mood", """{"type":"string","enum":["positive","negative","neutral","very_mixed"]}""")]
    [InlineData("stars", """{"type":"integer","minimum":1,"maximum":5}""")]
    [InlineData("tags", """{"type":"array","items":{"type":"string"}}""")]
    [InlineData("codes", """{"type":"array","items":{"type":"integer"}}""")]
    [InlineData("origin", """{"type":["object","null"],"properties":{"City":{"type":"string","description":"The city, as written on the note."},"Country":{"type":"string","description":"ISO 3166 code"},"Zip":{"type":["integer","null"]}},"required":["City","Country","Zip"],"additionalProperties":false}""")]
    [InlineData("is_refund", """{"type":"boolean"}""")]
    [InlineData("written_at", """{"type":"string","format":"date-time"}""")]
    public void The_property_type_decides_the_schema(string column, string schema)
    {
        var schemas = Registry().Select(r => JsonDocument.Parse(r.Schema).RootElement).ToList();
        var property = schemas.Select(s => s.GetProperty("properties")).First(p => p.TryGetProperty(column, out _)).GetProperty(column);

        Assert.Equal(schema, property.GetRawText());
    }

    [Fact]
    public void Every_answer_schema_is_strict()
    {
        foreach (var (_, schema, _) in Registry())
        {
            var root = JsonDocument.Parse(schema).RootElement;
            Assert.False(root.GetProperty("additionalProperties").GetBoolean());
            Assert.Equal(
                root.GetProperty("properties").EnumerateObject().Select(p => p.Name),
                root.GetProperty("required").EnumerateArray().Select(e => e.GetString()));
        }
    }

    [Fact]
    public void Image_columns_and_model_options_reach_the_registry()
    {
        var sql = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Typed).Output).Single(s => s.Kind == PgLlmScriptKind.Table).Sql;

        Assert.Contains("system_prompt => 'You read receipts.',", sql, StringComparison.Ordinal);
        Assert.Contains("image_columns => ARRAY['image_url']::text[],", sql, StringComparison.Ordinal);
        Assert.Contains("max_attempts => 5, temperature => 0.2, max_output_tokens => 200,", sql, StringComparison.Ordinal);
        Assert.Contains("image_columns => ARRAY['scan']::text[],", sql, StringComparison.Ordinal);
        Assert.Contains("image_columns => ARRAY[]::text[],", sql, StringComparison.Ordinal);
        Assert.Contains("max_attempts => 5, temperature => NULL, max_output_tokens => NULL,", sql, StringComparison.Ordinal);
    }

    [Fact]
    public void Changing_a_description_or_an_option_changes_the_script()
    {
        var before = Script(Typed);

        Assert.NotEqual(before, Script(Typed.Replace("The amount paid, taxes included", "The amount paid", StringComparison.Ordinal)));
        Assert.NotEqual(before, Script(Typed.Replace("Temperature = 0.2", "Temperature = 0.3", StringComparison.Ordinal)));
        Assert.NotEqual(before, Script(Typed.Replace("public int Stars", "public decimal Stars", StringComparison.Ordinal)));
        Assert.NotEqual(before, Script(Typed.Replace("AllowNull = true", "AllowNull = false", StringComparison.Ordinal)));
    }

    private static string Script(string source) =>
        GeneratorHarness.LoadScripts(GeneratorHarness.Run(source).Output).Single(s => s.Kind == PgLlmScriptKind.Table).Name;

    /// <summary>The json_schema literal of every registry row.</summary>
    private static List<(string Task, string Schema, string Sql)> Registry()
    {
        var sql = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Typed).Output).Single(s => s.Kind == PgLlmScriptKind.Table).Sql;
        var rows = new List<(string, string, string)>();
        const string Prefix = "json_schema => '";
        foreach (var line in sql.Split('\n').Where(l => l.TrimStart().StartsWith(Prefix, StringComparison.Ordinal)))
        {
            var literal = line.Trim();
            literal = literal[Prefix.Length..literal.LastIndexOf("'::json", StringComparison.Ordinal)].Replace("''", "'", StringComparison.Ordinal);
            rows.Add((string.Empty, literal, sql));
        }

        Assert.NotEmpty(rows);
        return rows;
    }
}
