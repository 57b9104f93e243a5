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

    [Theory]
    [InlineData("Temperature = 2.5", "Temperature must be between 0 and 2")]
    [InlineData("Temperature = -0.1", "Temperature must be between 0 and 2")]
    [InlineData("MaxOutputTokens = 0", "MaxOutputTokens must be at least 1")]
    [InlineData("Tier = (LlmTier)2", "Tier must be LlmTier.Live or LlmTier.Batch")]
    public void PGLLM009_invalid_model_options(string option, string message)
    {
        var (diagnostic, source) = Single($$"""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}", {{option}})] public string? Summary { get; init; }
            }
            """, "PGLLM009");

        Assert.Equal(option, SourceOf(diagnostic, source));
        Assert.Contains(message, diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("object?", "'object' says nothing")]
    [InlineData("char", "use string")]
    [InlineData("byte[]?", "binary data")]
    [InlineData("System.Collections.Generic.Dictionary<string, int>?", "has no JSON schema mapping")]
    [InlineData("System.TimeSpan?", "has no JSON schema mapping")]
    [InlineData("int[][]?", "array of arrays")]
    [InlineData("Node?", "refers to itself")]
    [InlineData("Holder?", "its property 'Payload'")]
    public void PGLLM010_a_target_type_that_cannot_be_mapped(string type, string reason)
    {
        var (diagnostic, source) = Single($$"""
            public sealed record Node(string Name, Node? Next);
            public sealed record Holder(string Name, object Payload);

            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Answer about {Body}")] public {{type}} Answer { get; init; }
            }
            """, "PGLLM010");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        var message = diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains("Property 'Answer'", message, StringComparison.Ordinal);
        Assert.Contains(reason, message, StringComparison.Ordinal);
        Assert.Equal("LlmColumn(\"Answer about {Body}\")", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM010_on_a_multi_target_task_points_at_the_targets()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            [LlmTask("Answer about {Body}", nameof(A), nameof(B))]
            public sealed record T(long Id, string Body, string? A, object? B);
            """, "PGLLM010");

        Assert.Equal("nameof(A)", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM011_two_types_mapped_to_one_table_are_both_reported_and_neither_is_emitted()
    {
        var source = Wrap("""
            [LlmTable("reviews")]
            public sealed record A(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
            }

            [LlmTable("reviews", Schema = "public")]
            public sealed record B(long Id, string Body)
            {
                [LlmColumn("Sentiment of {Body}")] public string? Sentiment { get; init; }
            }

            [LlmTable("reviews", Schema = "archive")]
            public sealed record C(long Id, string Body)
            {
                [LlmColumn("Sentiment of {Body}")] public string? Sentiment { get; init; }
            }
            """);
        var result = GeneratorHarness.Run(source);

        var diagnostics = result.Diagnostics.Where(d => d.Id == "PGLLM011").OrderBy(d => d.Location.SourceSpan.Start).ToList();
        Assert.Equal(2, diagnostics.Count);
        Assert.All(diagnostics, d => Assert.Equal(DiagnosticSeverity.Error, d.Severity));
        Assert.Equal("'Test.A' and 'Test.B' both map to table \"public\".\"reviews\": declare each table on one type", diagnostics[0].GetMessage(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal("LlmTable(\"reviews\")", SourceOf(diagnostics[0], source));
        Assert.DoesNotContain("1000-public.reviews", result.GeneratedSource, StringComparison.Ordinal);
        Assert.Contains("1000-archive.reviews", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM012_over_long_column_name()
    {
        var longName = new string('x', 64);
        var (diagnostic, source) = Single($$"""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}")]
                [System.ComponentModel.DataAnnotations.Schema.Column("{{longName}}")]
                public string? Summary { get; init; }
            }
            """, "PGLLM012");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Contains("is 64 bytes long", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        Assert.StartsWith("System.ComponentModel.DataAnnotations.Schema.Column(", SourceOf(diagnostic, source), StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM012_over_long_table_name_counts_bytes_not_characters()
    {
        // 32 two-byte characters: 64 bytes, over PostgreSQL's 63.
        var name = new string('é', 32);
        var (diagnostic, source) = Single($$"""
            [LlmTable("{{name}}")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
            }
            """, "PGLLM012");

        Assert.Contains("table name", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        Assert.Equal("\"" + name + "\"", SourceOf(diagnostic, source));
    }

    [Fact]
    public void PGLLM012_empty_task_name()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}", Name = " ")] public string? Summary { get; init; }
            }
            """, "PGLLM012");

        Assert.Equal("Name = \" \"", SourceOf(diagnostic, source));
    }

    [Fact]
    public void A_task_reading_what_another_task_writes_runs_after_it_without_a_diagnostic()
    {
        // PGLLM013 (retired) warned here; the task is now registered to run after the tasks upstream of it.
        var source = Wrap("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
                [LlmColumn("Translate to Spanish: {Summary}")] public string? SummaryEs { get; init; }
                [LlmColumn("Shorten {SummaryEs} of {Body}")] public string? Short { get; init; }
            }
            """);
        var result = GeneratorHarness.Run(source);

        Assert.Empty(result.Diagnostics);
        Assert.Contains("definition_hash => '", result.GeneratedSource, StringComparison.Ordinal);
        Assert.Contains("after => ARRAY['public.t:summary']::text[]", result.GeneratedSource, StringComparison.Ordinal);
        // Indirect upstreams count: 'short' waits for 'summary' too (it writes what 'summary_es' reads).
        Assert.Contains("after => ARRAY['public.t:summary', 'public.t:summary_es']::text[]", result.GeneratedSource, StringComparison.Ordinal);
        // The upstreams' write-backs wake their downstreams; the last task of the chain wakes nothing.
        Assert.Contains("PERFORM llm.wake_after('public.t:summary', p_job_ids);", result.GeneratedSource, StringComparison.Ordinal);
        Assert.Contains("PERFORM llm.wake_after('public.t:summary_es', p_job_ids);", result.GeneratedSource, StringComparison.Ordinal);
        Assert.DoesNotContain("PERFORM llm.wake_after('public.t:short'", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM017_tasks_reading_each_others_targets_in_a_cycle_fail_the_build()
    {
        var source = Wrap("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Summarize {Body} in the tone of {Tone}")] public string? Summary { get; init; }
                [LlmColumn("The tone of {Summary}")] public string? Tone { get; init; }
                [LlmColumn("Translate {Body}")] public string? BodyEs { get; init; }
            }
            """);
        var result = GeneratorHarness.Run(source);

        Assert.Equal(2, result.Diagnostics.Count);
        Assert.All(result.Diagnostics, d => Assert.Equal("PGLLM017", d.Id));
        Assert.All(result.Diagnostics, d => Assert.Equal(DiagnosticSeverity.Error, d.Severity));
        var messages = result.Diagnostics.Select(d => d.GetMessage(System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Contains(messages, m => m.Contains("Task 'summary' is in a cycle of tasks that read each other's targets (summary -> tone -> summary;", StringComparison.Ordinal));
        Assert.Contains(messages, m => m.Contains("Task 'tone' is in a cycle of tasks that read each other's targets (tone -> summary -> tone;", StringComparison.Ordinal));
        Assert.Equal(
            ["\"Summarize {Body} in the tone of {Tone}\"", "\"The tone of {Summary}\""],
            result.Diagnostics.Select(d => SourceOf(d, source)).Order(StringComparer.Ordinal));
        // The table is not emitted at all: no script with a task that could never run.
        Assert.DoesNotContain("public.t:", result.GeneratedSource, StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM014_image_on_a_property_that_holds_no_url_or_bytes()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, [property: LlmImage] int Picture)
            {
                [LlmColumn("Describe {Picture}")] public string? Description { get; init; }
            }
            """, "PGLLM014");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal("LlmImage", SourceOf(diagnostic, source));
        Assert.Contains("needs a string (an image URL) or a byte[]", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM014_image_as_a_target()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Draw {Body}")]
                [LlmImage]
                public string? Picture { get; init; }
            }
            """, "PGLLM014");

        Assert.Contains("an image is an input", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nameof(Body)", "'Body'")]
    [InlineData("\"Sumary\"", "'Sumary'")]
    public void PGLLM015_allow_null_naming_something_that_is_not_a_target(string name, string shown)
    {
        var (diagnostic, source) = Single($$"""
            [LlmTable("t")]
            [LlmTask("Summarize {Body}", nameof(Summary), nameof(Mood), AllowNull = [nameof(Mood), {{name}}])]
            public sealed record T(long Id, string Body, string? Summary, string? Mood);
            """, "PGLLM015");

        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal($"AllowNull = [nameof(Mood), {name}]", SourceOf(diagnostic, source));
        Assert.Equal($"Task 'summary+mood' allows null for {shown}, which is not one of its targets (Summary, Mood)",
            diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void PGLLM015_stops_the_table_from_generating()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            [LlmTask("Summarize {Body}", nameof(Summary), AllowNull = ["Nope"])]
            public sealed record T(long Id, string Body, string? Summary);
            """));

        Assert.Contains(result.Diagnostics, d => d.Id == "PGLLM015");
        Assert.DoesNotContain("public.t:summary", result.GeneratedSource ?? string.Empty, StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM016_allow_null_on_a_property_that_cannot_hold_null_is_a_warning_and_the_schema_follows_the_declaration()
    {
        var (diagnostic, source) = Single("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Rate {Body}", AllowNull = true)] public int Stars { get; init; }
            }
            """, "PGLLM016");

        Assert.Equal(DiagnosticSeverity.Warning, diagnostic.Severity);
        Assert.Equal("AllowNull = true", SourceOf(diagnostic, source));
        Assert.Equal("Task 'stars' allows null for 'Stars', but its type 'int' cannot hold null: make the property nullable or take it out of AllowNull",
            diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Contains("\"stars\":{\"type\":[\"integer\",\"null\"]}", Sql(GeneratorHarness.Run(source)), StringComparison.Ordinal);
    }

    [Fact]
    public void PGLLM016_on_a_task_target_declared_not_nullable()
    {
        var (diagnostic, _) = Single("""
            [LlmTable("t")]
            [LlmTask("Summarize {Body}", nameof(Summary), nameof(Mood), AllowNull = [nameof(Summary), nameof(Mood)])]
            public sealed record T(long Id, string Body, string Summary, string? Mood);
            """, "PGLLM016");

        Assert.Contains("'Summary', but its type 'string' cannot hold null", diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    [Fact]
    public void A_nullable_target_without_allow_null_needs_a_value_and_reports_nothing()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            [LlmTask("Read {Body}", nameof(Total), nameof(Taxes), AllowNull = [nameof(Taxes)])]
            public sealed record T(long Id, string Body, decimal? Total, decimal? Taxes)
            {
                [LlmColumn("Summarize {Body}")] public string? Summary { get; init; }
                [LlmColumn("Title of {Body}", AllowNull = true)] public string? Title { get; init; }
                [LlmColumn("Topic of {Body}", AllowNull = false)] public string? Topic { get; init; }
            }
            """));

        Assert.Empty(result.Diagnostics);
        var generated = Sql(result);
        Assert.Contains("\"total\":{\"type\":\"number\"}", generated, StringComparison.Ordinal);
        Assert.Contains("\"taxes\":{\"type\":[\"number\",\"null\"]}", generated, StringComparison.Ordinal);
        Assert.Contains("\"summary\":{\"type\":\"string\"}", generated, StringComparison.Ordinal);
        Assert.Contains("\"title\":{\"type\":[\"string\",\"null\"]}", generated, StringComparison.Ordinal);
        Assert.Contains("\"topic\":{\"type\":\"string\"}", generated, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("OverwriteAlways = [nameof(Body)]", "Task 'summary+mood' lists 'Body' in OverwriteAlways, which is not one of its targets (Summary, Mood)")]
    [InlineData("OverwriteNever = [\"Sumary\"]", "Task 'summary+mood' lists 'Sumary' in OverwriteNever, which is not one of its targets (Summary, Mood)")]
    [InlineData("OverwriteAlways = [nameof(Mood)], OverwriteNever = [nameof(Mood)]",
        "Task 'summary+mood' lists 'Mood' in OverwriteNever, which OverwriteAlways names too: name it in one list")]
    public void PGLLM018_overwrite_naming_something_that_is_not_a_target_or_a_target_twice(string option, string message)
    {
        var source = Wrap($$"""
            [LlmTable("t")]
            [LlmTask("Summarize {Body}", nameof(Summary), nameof(Mood), {{option}})]
            public sealed record T(long Id, string Body, string? Summary, string? Mood);
            """);
        var result = GeneratorHarness.Run(source);

        var diagnostic = Assert.Single(result.Diagnostics, d => d.Id == "PGLLM018");
        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal(message, diagnostic.GetMessage(System.Globalization.CultureInfo.InvariantCulture));
        Assert.DoesNotContain("public.t:summary", result.GeneratedSource ?? string.Empty, StringComparison.Ordinal);
    }

    [Fact]
    public void Overwrite_per_target_sets_how_the_write_back_treats_an_edited_or_filled_cell()
    {
        var result = GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            [LlmTask("Read {Body}", nameof(Label), nameof(Tag), nameof(Memo), OverwriteAlways = [nameof(Tag)], OverwriteNever = ["memo"])]
            public sealed record T(long Id, string Body, string? Label, string? Tag, string? Memo)
            {
                [LlmColumn("Title of {Body}", Overwrite = LlmOverwrite.Always)] public string? Title { get; init; }
                [LlmColumn("Topic of {Body}", Overwrite = LlmOverwrite.Never)] public string? Topic { get; init; }
                [LlmColumn("Mood of {Body}")] public string? Mood { get; init; }
            }
            """));

        Assert.Empty(result.Diagnostics);
        var generated = Sql(result);
        Assert.Contains("\"label\" = CASE WHEN 'label' = ANY (e.columns) THEN t.\"label\" ELSE r.\"label\" END", generated, StringComparison.Ordinal);
        Assert.Contains("\"tag\" = r.\"tag\"", generated, StringComparison.Ordinal);
        Assert.Contains("\"memo\" = coalesce(t.\"memo\", r.\"memo\")", generated, StringComparison.Ordinal);
        Assert.Contains("\"title\" = r.\"title\"", generated, StringComparison.Ordinal);
        Assert.Contains("\"topic\" = coalesce(t.\"topic\", r.\"topic\")", generated, StringComparison.Ordinal);
        Assert.Contains("\"mood\" = CASE WHEN 'mood' = ANY (e.columns) THEN t.\"mood\" ELSE r.\"mood\" END", generated, StringComparison.Ordinal);
        // Only the targets that keep an edit are watched, in one trigger for the table; a task with none looks nothing up.
        var watched = generated.Split('\n').Single(l => l.StartsWith("CREATE OR REPLACE TRIGGER \"pgllm:edited\" ", StringComparison.Ordinal));
        Assert.Equal(["\"label\"", "\"mood\""], watched.Split(" AFTER UPDATE OF ")[1].Split(" ON ")[0].Split(", ").Order(StringComparer.Ordinal));
        Assert.Equal(2, generated.Split("FROM llm.edited_cell AS e").Length - 1);
    }

    [Fact]
    public void A_table_whose_targets_all_overwrite_drops_its_edit_triggers()
    {
        var generated = Sql(GeneratorHarness.Run(Wrap("""
            [LlmTable("t")]
            public sealed record T(long Id, string Body)
            {
                [LlmColumn("Title of {Body}", Overwrite = LlmOverwrite.Always)] public string? Title { get; init; }
            }
            """)));

        Assert.DoesNotContain("llm.edited_cell", generated, StringComparison.Ordinal);
        Assert.Contains("DROP TRIGGER IF EXISTS \"pgllm:edited\" ON \"public\".\"t\";", generated, StringComparison.Ordinal);
        Assert.Contains("DROP TRIGGER IF EXISTS \"pgllm:edited:delete\" ON \"public\".\"t\";", generated, StringComparison.Ordinal);
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

    /// <summary>The SQL of every generated script.</summary>
    private static string Sql(GeneratorResult result) => string.Concat(GeneratorHarness.LoadScripts(result.Output).Select(s => s.Sql));

    private static string Wrap(string declarations) => "using PgLlm;\nnamespace Test;\n" + declarations;
}
