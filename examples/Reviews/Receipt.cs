using System.ComponentModel;
using PgLlm;

namespace Reviews;

/// <summary>
/// A photographed receipt: one call reads the image and fills the total and the taxes, as numbers,
/// into <c>numeric</c> columns. An answer that is not a number (or does not fit the column) writes nothing.
/// The model must answer a total; it may answer null for the taxes (AllowNull), as some receipts show none.
/// </summary>
[LlmTable("receipts", Schema = "public")]
[LlmTask(
    "Extract the total amount and the taxes from this receipt: {ImageUrl}",
    nameof(Total),
    nameof(Taxes),
    Name = "total_and_taxes",
    AllowNull = [nameof(Taxes)],
    SystemPrompt = "You read receipts. Answer with the amounts as printed, without currency symbols.",
    Temperature = 0)]
public sealed record Receipt
{
    /// <summary>The key.</summary>
    public long Id { get; init; }

    /// <summary>Where the receipt's photo is; sent to the model as an image.</summary>
    [LlmImage]
    public required string ImageUrl { get; init; }

    /// <summary>The amount paid, taxes included; filled by the worker.</summary>
    [Description("The amount paid, taxes included")]
    public decimal? Total { get; init; }

    /// <summary>The taxes included in the total; filled by the worker.</summary>
    [Description("The taxes included in the total (VAT, sales tax), or null when the receipt shows none")]
    public decimal? Taxes { get; init; }
}
