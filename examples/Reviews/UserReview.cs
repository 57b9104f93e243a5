using PgLlm;

namespace Reviews;

/// <summary>
/// A customer review. Two tasks, as in the reference's examples: the sentiment of <see cref="ReviewText"/>
/// fills <see cref="Sentiment"/>; one call reads <see cref="UserReviewOg"/> and fills both
/// <see cref="Emotion"/> and the Spanish translation <see cref="UserReviewEs"/>.
/// </summary>
[LlmTable("user_reviews", Schema = "public")]
[LlmTask(
    "Analyze the sentiment and translate the following review to Spanish. Text: {UserReviewOg}",
    nameof(Emotion),
    nameof(UserReviewEs),
    Name = "analyze_and_translate")]
public sealed record UserReview
{
    /// <summary>The key (named Id, so no [Key] is needed).</summary>
    public long Id { get; init; }

    /// <summary>What the customer wrote.</summary>
    public required string ReviewText { get; init; }

    /// <summary>positive, negative or neutral; filled by the worker.</summary>
    [LlmColumn("Analyze the sentiment of this text and respond with only \"positive\", \"negative\", or \"neutral\". Return value in lowercase. Text: {ReviewText}")]
    public string? Sentiment { get; init; }

    /// <summary>A review in its original language.</summary>
    public string? UserReviewOg { get; init; }

    /// <summary>The emotion of <see cref="UserReviewOg"/>; filled by the worker.</summary>
    public string? Emotion { get; init; }

    /// <summary>The Spanish translation of <see cref="UserReviewOg"/>; filled by the worker.</summary>
    public string? UserReviewEs { get; init; }
}
