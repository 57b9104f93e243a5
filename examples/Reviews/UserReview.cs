using PgLlm;

namespace Reviews;

/// <summary>The sentiment of a review, stored as lowercase text ("positive", ...): the model may answer nothing else.</summary>
public enum ReviewSentiment
{
    /// <summary>The customer liked it.</summary>
    Positive,

    /// <summary>The customer did not like it.</summary>
    Negative,

    /// <summary>Neither.</summary>
    Neutral,
}

/// <summary>
/// A customer review, with the reference article's use cases as tasks: the sentiment of
/// <see cref="ReviewText"/>; its Spanish translation; a background summary from <see cref="FullName"/>;
/// OCR of the image at <see cref="AttachedImageUrl"/> (sent to the model as an image, not as text); and one
/// call that reads <see cref="UserReviewOg"/> and fills both <see cref="Emotion"/> and <see cref="UserReviewEs"/>.
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

    /// <summary>The overall sentiment of the review.</summary>
    /// <remarks>A target's summary (or [Description]) is the field's description in the schema the model gets; the enum lets it answer only these three values.</remarks>
    [LlmColumn("Analyze the sentiment of this text. Text: {ReviewText}", Temperature = 0)]
    public ReviewSentiment? Sentiment { get; init; }

    /// <summary>The Spanish translation of the review text, and nothing else.</summary>
    [LlmColumn("Translate the following text to Spanish (es). Only return the Spanish text with no additional text. Text: {ReviewText}")]
    public string? ReviewTextEs { get; init; }

    /// <summary>The customer's name.</summary>
    public string? FullName { get; init; }

    /// <summary>A short background summary of the customer.</summary>
    [LlmColumn("Give a summary background on {FullName}.", MaxOutputTokens = 300)]
    public string? UserBackground { get; init; }

    /// <summary>An image the customer attached.</summary>
    [LlmImage]
    public string? AttachedImageUrl { get; init; }

    /// <summary>All text in the attached image, or null when it shows none.</summary>
    /// <remarks>The only target of this table the model may answer null for: its task says AllowNull.</remarks>
    [LlmColumn("Extract all text from this image: {AttachedImageUrl}", AllowNull = true)]
    public string? ImageDescription { get; init; }

    /// <summary>A review in its original language.</summary>
    public string? UserReviewOg { get; init; }

    /// <summary>The emotion the review expresses, in one word.</summary>
    public string? Emotion { get; init; }

    /// <summary>The review translated to Spanish.</summary>
    public string? UserReviewEs { get; init; }
}
