using System.ComponentModel.DataAnnotations;

namespace PgLlm.InDatabase.Tests;

/// <summary>A task with few attempts, for failure tests.</summary>
[LlmTable("items")]
public sealed record Item(long Id, string Input)
{
    [LlmColumn("Echo {Input}", MaxAttempts = 3)]
    public string? Output { get; init; }
}

/// <summary>A task's own model and system prompt, and literal braces in its prompt.</summary>
[LlmTable("notes")]
public sealed record Note(long Id, string Body)
{
    [LlmColumn("Summarize {{in one line}}: {Body}", Model = "tiny-model", SystemPrompt = "Answer briefly.")]
    public string? Summary { get; init; }
}

/// <summary>A column of three characters at most.</summary>
[LlmTable("codes")]
public sealed record CodeRow(long Id, string Input)
{
    [LlmColumn("Code for {Input}")]
    public string? Code { get; init; }
}

/// <summary>Stored in a PostgreSQL enum column.</summary>
public enum Verdict
{
    Keep,
    Drop,
    NeedsReview,
}

/// <summary>Stored in a jsonb column: a nested object of the answer.</summary>
public sealed record Place(string City, int? Zip);

/// <summary>
/// One task filling columns of every kind the generator's schemas have (answer-cases.json runs answers through it).
/// Every nullable target allows null but Ref, whose null answer is an invalid one.
/// </summary>
[LlmTable("typed_answers")]
[LlmTask(
    "Judge {Body}",
    nameof(Stars), nameof(Score), nameof(Recommended), nameof(Verdict), nameof(Mood), nameof(ReviewedOn), nameof(Tags),
    nameof(Codes), nameof(Place), nameof(Places), nameof(SeenAt), nameof(OpensAt), nameof(Ref),
    Name = "typed",
    AllowNull = [nameof(Score), nameof(Recommended), nameof(Mood), nameof(ReviewedOn), nameof(Tags), nameof(Codes), nameof(Place),
                 nameof(Places), nameof(SeenAt), nameof(OpensAt)])]
public sealed record TypedAnswer
{
    public long Id { get; init; }

    public required string Body { get; init; }

    [Range(1, 5)]
    public int Stars { get; init; }

    [Range(0.0, 1.5)]
    public decimal? Score { get; init; }

    public bool? Recommended { get; init; }

    public Verdict Verdict { get; init; }

    public Verdict? Mood { get; init; }

    public DateOnly? ReviewedOn { get; init; }

    public string[]? Tags { get; init; }

    public long[]? Codes { get; init; }

    public Place? Place { get; init; }

    public Place[]? Places { get; init; }

    public DateTimeOffset? SeenAt { get; init; }

    public TimeOnly? OpensAt { get; init; }

    public Guid? Ref { get; init; }
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
