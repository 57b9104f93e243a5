using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>The generated C# and SQL, compared with reviewed copies in Golden/.</summary>
public sealed class GoldenTests
{
    internal const string Reviews = """
        using PgLlm;

        namespace Shop;

        [LlmTable("user_reviews", Schema = "public")]
        [LlmTask("Analyze the sentiment and translate the following review to Spanish. Text: {UserReviewOg}", nameof(Emotion), nameof(UserReviewEs))]
        public sealed record UserReview
        {
            public long Id { get; init; }
            public required string ReviewText { get; init; }
            [LlmColumn("Analyze the sentiment of this text. Text: {ReviewText}")]
            public string? Sentiment { get; init; }
            public string? UserReviewOg { get; init; }
            public string? Emotion { get; init; }
            public string? UserReviewEs { get; init; }
        }
        """;

    internal const string Hostile = """
        using System.ComponentModel.DataAnnotations;
        using System.ComponentModel.DataAnnotations.Schema;
        using PgLlm;

        namespace Shop;

        // Composite key, a non-public schema, quoted mixed-case names, literal braces, options.
        [LlmTable("Order Lines", Schema = "Sales \"EU\"")]
        public sealed record OrderLine(
            [property: Key] int TenantId,
            [property: Key] long LineNo,
            [property: Column("Item Name")] string ItemName,
            int Quantity)
        {
            [LlmColumn("Classify {ItemName} (x{Quantity}) as {{food|tool}}: {Item Name}", Name = "category", SystemPrompt = "Answer with one word.", Model = "small-model", MaxAttempts = 3)]
            [Column("Category's \"Label\"")]
            public string? Category { get; init; }

            [LlmColumn("How many days does {ItemName} keep?")]
            public int? ShelfDays { get; init; }
        }
        """;

    // A chain: 'headline' reads what 'summary' writes, 'teaser' what 'headline' writes (so it is after both); the
    // upstreams' write-backs wake their downstreams, and the registry gets each task's upstreams.
    internal const string Chain = """
        using PgLlm;

        namespace Shop;

        [LlmTable("articles")]
        public sealed record Article(long Id, string Body)
        {
            [LlmColumn("Summarize {Body}")]
            public string? Summary { get; init; }

            [LlmColumn("Headline of {Summary} for {Body}")]
            public string? Headline { get; init; }

            [LlmColumn("Teaser for {Headline}")]
            public string? Teaser { get; init; }
        }
        """;

    // The batch tier: 'catalog' (an [LlmTask]) and 'summary_de' go through the provider's Batch API; 'summary' is live
    // work, and 'summary_de' reads what it writes (a batch-tier task in a chain). Batch-tier jobs are enqueued at
    // priority 2 without a wake-up or a promotion, and their registry rows say tier => 'batch'.
    internal const string Batch = """
        using PgLlm;

        namespace Shop;

        [LlmTable("products")]
        [LlmTask("Tags and a category for {Description}", nameof(Tags), nameof(Category), Name = "catalog", Tier = LlmTier.Batch)]
        public sealed record Product(long Id, string Description)
        {
            [LlmColumn("Summarize {Description}")]
            public string? Summary { get; init; }

            [LlmColumn("Translate to German: {Summary}", Tier = LlmTier.Batch)]
            public string? SummaryDe { get; init; }

            public string? Tags { get; init; }

            public string? Category { get; init; }
        }
        """;

    [Fact]
    public void Batch_tier_generated_code_and_sql_match_golden_files() => VerifyAll("Batch", Batch);

    [Fact]
    public void Chain_generated_code_and_sql_match_golden_files() => VerifyAll("Chain", Chain);

    [Fact]
    public void Reviews_generated_code_and_sql_match_golden_files() => VerifyAll("Reviews", Reviews);

    [Fact]
    public void Hostile_names_generated_code_and_sql_match_golden_files() => VerifyAll("Hostile", Hostile);

    [Fact]
    public void Only_table_scripts_are_generated_and_each_carries_a_hash_of_its_sql()
    {
        var scripts = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Reviews).Output);

        // The queue's own schema is the runtime's numbered migrations, not generated.
        Assert.Equal(["1000-public.user_reviews"], scripts.Select(s => s.Stream));
        Assert.Equal([PgLlmScriptKind.Table], scripts.Select(s => s.Kind));
        Assert.All(scripts, s => Assert.Matches("^[0-9a-f]{12}$", s.Hash));
        Assert.All(scripts, s => Assert.Equal(s.Stream + "@" + s.Hash, s.Name));
    }

    [Fact]
    public void Changing_a_prompt_changes_only_that_tables_script_name()
    {
        var before = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Reviews, Hostile).Output);
        var after = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Reviews.Replace("Analyze the sentiment of this text.", "Rate the mood of this text."), Hostile).Output);

        Assert.Equal(before.Select(s => s.Stream), after.Select(s => s.Stream));
        var changed = before.Zip(after).Where(p => p.First.Name != p.Second.Name).Select(p => p.First.Stream).ToList();
        Assert.Equal(["1000-public.user_reviews"], changed);
    }

    [Fact]
    public void Enqueue_triggers_inline_the_same_wake_up_steps_as_llm_wake_workers()
    {
        var scripts = GeneratorHarness.LoadScripts(GeneratorHarness.Run(Reviews).Output);
        var core = PgLlmQueueMigrations.All.Single(s => s.Sql.Contains("CREATE OR REPLACE FUNCTION llm.wake_workers()", StringComparison.Ordinal)).Sql;
        var table = scripts.Single(s => s.Kind == PgLlmScriptKind.Table).Sql;

        // llm.wake_workers' IF ... END IF, its comments left out, its first IF as the ELSIF it becomes inline.
        var body = core[core.IndexOf("CREATE OR REPLACE FUNCTION llm.wake_workers()", StringComparison.Ordinal)..];
        body = body[body.IndexOf("    IF ", StringComparison.Ordinal)..body.IndexOf("    END IF;", StringComparison.Ordinal)];
        var steps = string.Concat(body.Split('\n').Where(l => l.Length > 0 && !l.TrimStart().StartsWith("--", StringComparison.Ordinal)).Select(l => l + "\n"));
        Assert.StartsWith("    IF current_setting(", steps, StringComparison.Ordinal);
        Assert.Equal(PgLlm.Generators.Sql.TableScriptEmitter.WakeSleepingWorkers, "    ELS" + steps.TrimStart());

        // Every enqueue trigger of the table runs them, after its insert found no pending job (when it found one, it
        // promotes a re-run's job to live work instead).
        var enqueues = table.Split("CREATE OR REPLACE FUNCTION ").Where(f => f.Split('\n')[0].EndsWith(":enqueue\"() RETURNS trigger", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(enqueues);
        Assert.All(enqueues, f => Assert.Matches(
            "    IF NOT FOUND THEN\n        UPDATE llm.job SET priority = 0\n[^\n]+ AND state = 'pending' AND priority <> 0;\n        RETURN NULL;\n"
            + System.Text.RegularExpressions.Regex.Escape(PgLlm.Generators.Sql.TableScriptEmitter.WakeSleepingWorkers), f));
    }

    private static void VerifyAll(string name, string source)
    {
        var result = GeneratorHarness.Run(source);
        Assert.Empty(result.Diagnostics);
        Assert.Empty(result.CompilationErrors);
        GoldenFiles.Verify($"{name}/PgLlmScripts.g.cs", result.GeneratedSource!);
        foreach (var script in GeneratorHarness.LoadScripts(result.Output))
        {
            GoldenFiles.Verify($"{name}/{script.FileName}", script.Sql);
        }
    }
}
