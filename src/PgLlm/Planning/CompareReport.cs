namespace PgLlm.Planning;

/// <summary>How often one target's new answers agree with the values the rows hold.</summary>
/// <param name="Target">The target column.</param>
/// <param name="Kind">Its kind of answer (<c>string</c>, <c>enum</c>, <c>integer</c>, <c>date</c>, ...).</param>
/// <param name="Exact">Whether values are compared exactly; otherwise by <see cref="AnswerAgreement.TextMeasure"/>.</param>
/// <param name="Compared">Rows with a valid new answer.</param>
/// <param name="Equal">Of those, rows whose new value equals the old (after normalizing text).</param>
/// <param name="MeanAgreement">The average agreement (0 to 1) over <paramref name="Compared"/>; null when none was compared.</param>
public sealed record TargetAgreement(string Target, string Kind, bool Exact, int Compared, int Equal, double? MeanAgreement);

/// <summary>The outcome of <c>pgllm compare</c>: the current definition run on a sample of stale rows, nothing written back.</summary>
/// <param name="RunId">The run's id in <c>llm.compare_sample</c>.</param>
/// <param name="Task">The task.</param>
/// <param name="DefinitionHash">The current definition compared.</param>
/// <param name="Sampled">Stale rows the model was asked for.</param>
/// <param name="Invalid">Answers that failed validation (as the worker validates them).</param>
/// <param name="Failed">Calls that failed otherwise (the endpoint's errors, timeouts, inputs that cannot be sent).</param>
/// <param name="InputTokens">The input tokens the calls used.</param>
/// <param name="OutputTokens">The output tokens the calls used.</param>
/// <param name="EstimatedCost">Their cost at the configured prices; null when none is known.</param>
/// <param name="Targets">Per target, how often the new answer agrees with the old.</param>
public sealed record CompareReport(
    long RunId,
    string Task,
    string DefinitionHash,
    int Sampled,
    int Invalid,
    int Failed,
    long InputTokens,
    long OutputTokens,
    decimal? EstimatedCost,
    IReadOnlyList<TargetAgreement> Targets)
{
    /// <summary>The first error of a row without a valid answer (invalid or failed); null when every answer was valid.</summary>
    public string? FirstError { get; init; }

    /// <summary>The share of invalid answers among the sampled rows (0 when none was sampled).</summary>
    public double InvalidRate => Sampled == 0 ? 0 : (double)Invalid / Sampled;
}
