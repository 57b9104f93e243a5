using System.ComponentModel;
using System.ComponentModel.DataAnnotations;

namespace PgLlm.Tests;

/// <summary>Stored in a PostgreSQL enum column.</summary>
public enum Mood
{
    Positive,
    Negative,
    Neutral,
}

/// <summary>Stored in a jsonb column.</summary>
public sealed record Origin(string City, [property: Description("ISO 3166 country code")] string Country);

/// <summary>One task filling columns of many types; stars has a CHECK constraint (1 to 5); only mood may be answered null.</summary>
[LlmTable("typed_reviews")]
[LlmTask(
    "Rate and tag this review: {Body}",
    nameof(Stars), nameof(Score), nameof(Recommended), nameof(Mood), nameof(ReviewedOn), nameof(Tags), nameof(Codes), nameof(Origin), nameof(SeenAt),
    Name = "typed",
    AllowNull = [nameof(Mood)],
    Temperature = 0.3,
    MaxOutputTokens = 300,
    MaxAttempts = 5)]
public sealed record TypedReview
{
    public long Id { get; init; }

    public required string Body { get; init; }

    [Description("1 to 5 stars")]
    [Range(1, 5)]
    public int? Stars { get; init; }

    public decimal? Score { get; init; }

    public bool? Recommended { get; init; }

    public Mood? Mood { get; init; }

    public DateOnly? ReviewedOn { get; init; }

    public string[]? Tags { get; init; }

    public int[]? Codes { get; init; }

    public Origin? Origin { get; init; }

    public DateTimeOffset? SeenAt { get; init; }
}

/// <summary>Image inputs: a URL column and a bytea column; a receipt's total and taxes into numeric columns.</summary>
[LlmTable("scans")]
[LlmTask("Read the total and the taxes of this receipt: {ImageUrl}", nameof(Total), nameof(Taxes), Name = "receipt")]
public sealed record Scan
{
    public long Id { get; init; }

    [LlmImage]
    public string? ImageUrl { get; init; }

    [LlmImage]
    public byte[]? Picture { get; init; }

    [LlmColumn("Extract all text from this image: {ImageUrl}")]
    public string? ImageText { get; init; }

    [LlmColumn("Describe this picture: {Picture}")]
    public string? PictureText { get; init; }

    public decimal? Total { get; init; }

    public decimal? Taxes { get; init; }
}
