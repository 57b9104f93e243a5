namespace PgLlm.Planning;

/// <summary>One row of a comparison, as kept in <c>llm.compare_sample</c>.</summary>
/// <param name="RowKey">The row's key (jsonb text).</param>
/// <param name="OldAnswer">The targets' values the row holds (jsonb text).</param>
/// <param name="NewAnswer">The validated answer of the current definition (jsonb text); null when invalid or failed.</param>
/// <param name="Agreement">Per target, the agreement of the new value with the old (jsonb text); null without a valid answer.</param>
/// <param name="Invalid">Whether the answer failed validation.</param>
/// <param name="Error">Why there is no valid answer; null when there is one.</param>
/// <param name="InputTokens">The call's input tokens, when reported.</param>
/// <param name="OutputTokens">The call's output tokens, when reported.</param>
internal sealed record CompareSample(
    string RowKey, string OldAnswer, string? NewAnswer, string? Agreement, bool Invalid, string? Error, int? InputTokens, int? OutputTokens);
