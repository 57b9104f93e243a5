using System.ComponentModel.DataAnnotations;
using System.ComponentModel.DataAnnotations.Schema;

namespace PgLlm.Tests;

/// <summary>Two tasks on one table, and a column no task reads.</summary>
[LlmTable("reviews")]
[LlmTask("Give the emotion and translate to Spanish: {Body}", nameof(Emotion), nameof(BodyEs), Name = "emotion_es")]
public sealed record Review
{
    public long Id { get; init; }

    public required string Body { get; init; }

    public string? Title { get; init; }

    [LlmColumn("Sentiment of: {Body}")]
    public string? Sentiment { get; init; }

    public string? Emotion { get; init; }

    public string? BodyEs { get; init; }
}

/// <summary>A composite key, and per-task model and system prompt.</summary>
[LlmTable("line_items")]
public sealed record LineItem([property: Key] int OrderId, [property: Key] int LineNo, string Description)
{
    [LlmColumn("Category of {Description}", Model = "tiny-model", SystemPrompt = "Answer with one word.")]
    public string? Category { get; init; }
}

/// <summary>A non-public schema and quoted mixed-case names with spaces and quotes.</summary>
[LlmTable("Customer Notes", Schema = "CRM Data")]
public sealed record CustomerNote
{
    [Key]
    [Column("NoteId")]
    public Guid NoteId { get; init; }

    [Column("NoteText")]
    public required string Text { get; init; }

    [LlmColumn("Summarize this note: {NoteText}")]
    [Column("Summary Of \"Note\"")]
    public string? Summary { get; init; }
}

/// <summary>A task with few attempts, for failure tests.</summary>
[LlmTable("flaky")]
public sealed record Flaky(long Id, string Input)
{
    [LlmColumn("Echo {Input}", MaxAttempts = 3)]
    public string? Output { get; init; }
}

/// <summary>One task whose targets treat a value someone else wrote three ways: kept if edited, never replaced, always replaced.</summary>
[LlmTable("triage_notes")]
[LlmTask("Label, tag and memo for: {Body}", nameof(Label), nameof(Tag), nameof(Memo), Name = "triage",
    OverwriteAlways = [nameof(Tag)], OverwriteNever = [nameof(Memo)])]
public sealed record TriageNote(long Id, string Body)
{
    public string? Label { get; init; }

    public string? Tag { get; init; }

    public string? Memo { get; init; }
}

/// <summary>A chain: the headline reads the summary, which another task writes; both read the body.</summary>
[LlmTable("articles")]
public sealed record Article(long Id, string Body)
{
    [LlmColumn("Summarize {Body}")]
    public string? Summary { get; init; }

    [LlmColumn("Headline of {Summary} for {Body}")]
    public string? Headline { get; init; }
}
