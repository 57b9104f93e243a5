using System.Globalization;

namespace PgLlm.Planning;

/// <summary>A task's rows by the definition that wrote them (<c>llm.task_rows</c>).</summary>
/// <param name="Total">Rows in the task's table.</param>
/// <param name="Current">Rows whose targets the task's current definition wrote.</param>
/// <param name="Stale">Rows whose targets an older definition wrote (or that hold a value no version names).</param>
/// <param name="NeverFilled">Rows PgLlm never filled and whose targets are empty.</param>
public sealed record TaskRowCounts(long Total, long Current, long Stale, long NeverFilled);

/// <summary>Where an estimate of tokens came from.</summary>
public enum TokenEstimateSource
{
    /// <summary>Nothing to estimate: no stale rows.</summary>
    None,

    /// <summary>The task's own answered jobs under its current definition (average tokens per job).</summary>
    CurrentHistory,

    /// <summary>The current prompt's length, at the characters per token the task's older answers show.</summary>
    PromptLengthWithHistoryRatio,

    /// <summary>The current prompt's length, at the default of 4 characters a token.</summary>
    PromptLengthDefaultRatio,

    /// <summary>The task's answered jobs under any of its definitions (output tokens).</summary>
    AnyHistory,

    /// <summary>A guess from the JSON schema of the answer (output tokens), for a task with no history.</summary>
    SchemaGuess,
}

/// <summary>How a re-run's duration was estimated.</summary>
public enum DurationSource
{
    /// <summary>Not estimated: no limits configured and no timings in the task's history.</summary>
    Unknown,

    /// <summary>At the requests and/or tokens per minute of the endpoint that serves the task.</summary>
    EndpointLimits,

    /// <summary>At the task's measured call time, with the endpoint's calls at once.</summary>
    MeasuredLatency,
}

/// <summary>What re-running a task's stale rows would take, estimated before anything runs.</summary>
public sealed record RerunEstimate
{
    /// <summary>The rows a re-run of the stale rows would call the model for.</summary>
    public long Rows { get; init; }

    /// <summary>Estimated input tokens of those calls.</summary>
    public long InputTokens { get; init; }

    /// <summary>Estimated output tokens of those calls.</summary>
    public long OutputTokens { get; init; }

    /// <summary>Where <see cref="InputTokens"/> came from.</summary>
    public TokenEstimateSource InputSource { get; init; }

    /// <summary>Where <see cref="OutputTokens"/> came from.</summary>
    public TokenEstimateSource OutputSource { get; init; }

    /// <summary>The characters per token used for a prompt-length estimate; null when the history gave the tokens.</summary>
    public double? CharactersPerToken { get; init; }

    /// <summary>The jobs of the history behind the estimate (of the current definition, or of the older one for the ratio).</summary>
    public long HistoryJobs { get; init; }

    /// <summary>The estimated cost at the configured prices; null when no price is known for the task's model.</summary>
    public decimal? EstimatedCost { get; init; }

    /// <summary>The estimated cost through the batch tier (<c>rerun --batch</c>): at the batch prices, by default half; null without prices.</summary>
    public decimal? EstimatedBatchCost { get; init; }

    /// <summary>How long the re-run would take; null when unknown.</summary>
    public TimeSpan? Duration { get; init; }

    /// <summary>How <see cref="Duration"/> was estimated.</summary>
    public DurationSource DurationSource { get; init; }

    /// <summary>The limits or timing behind <see cref="Duration"/>, for people (e.g. <c>60 requests/min</c>).</summary>
    public string? DurationBasis { get; init; }
}

/// <summary>
/// One task's plan (<c>pgllm plan</c>): its rows current, stale and never filled, the cells a person edited, and
/// what re-running the stale rows would cost in tokens, money and time.
/// </summary>
/// <param name="Task">The task's name.</param>
/// <param name="Model">The model the task names; null for the worker's default.</param>
/// <param name="DefinitionHash">The task's current definition hash.</param>
/// <param name="Rows">The task's rows by the definition that wrote them.</param>
/// <param name="Rerun">The estimate for re-running the stale rows.</param>
public sealed record TaskPlan(string Task, string? Model, string DefinitionHash, TaskRowCounts Rows, RerunEstimate Rerun)
{
    /// <summary>
    /// Target cells a person or an application changed (kept from PgLlm's writes), from <c>llm.edited_cells(task)</c>.
    /// Null: not counted, the queue has no <c>llm.edited_cells</c> (edited cells come with a later queue step).
    /// </summary>
    public long? EditedCells { get; init; }

    /// <summary>
    /// One line for a migration that changed the task's definition: its rows, the estimate of re-running the stale
    /// ones, and what to run next.
    /// </summary>
    public string DescribeChange(string? previousHash) => string.Create(CultureInfo.InvariantCulture,
        $"{Task}: definition changed{(previousHash is null ? string.Empty : $" ({Short(previousHash)} -> {Short(DefinitionHash)})")}: " +
        $"{Rows.Stale:N0} rows stale, {Rows.Current:N0} current, {Rows.NeverFilled:N0} never filled; re-running the stale rows: " +
        $"~{Rerun.InputTokens:N0} input + ~{Rerun.OutputTokens:N0} output tokens, {FormatCost(Rerun.EstimatedCost)}{BatchCostText}, " +
        $"{FormatDuration(Rerun.Duration)}; run `pgllm plan` / `pgllm rerun`");

    /// <summary>The re-run's cost through the batch tier, in parentheses; nothing without prices.</summary>
    private string BatchCostText => Rerun.EstimatedBatchCost is { } batch ? $" ({FormatCost(batch)} through the batch tier)" : string.Empty;

    /// <summary>A cost for people: <c>~0.0123</c>, or <c>no prices</c>.</summary>
    public static string FormatCost(decimal? cost) =>
        cost is { } value ? "~" + value.ToString(value < 1 ? "0.0000" : "N2", CultureInfo.InvariantCulture) : "no prices";

    /// <summary>A duration for people: <c>~3m 20s</c>, or <c>time unknown</c>.</summary>
    public static string FormatDuration(TimeSpan? duration) => duration switch
    {
        null => "time unknown",
        { TotalDays: >= 1 } d => string.Create(CultureInfo.InvariantCulture, $"~{(int)d.TotalDays}d {d.Hours}h"),
        { TotalHours: >= 1 } d => string.Create(CultureInfo.InvariantCulture, $"~{(int)d.TotalHours}h {d.Minutes}m"),
        { TotalMinutes: >= 1 } d => string.Create(CultureInfo.InvariantCulture, $"~{(int)d.TotalMinutes}m {d.Seconds}s"),
        { } d => string.Create(CultureInfo.InvariantCulture, $"~{Math.Ceiling(d.TotalSeconds):0}s"),
    };

    private static string Short(string hash) => hash.Length > 12 ? hash[..12] : hash;
}
