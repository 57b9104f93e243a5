using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Npgsql;
using PgLlm.Planning;

namespace PgLlm.Cli;

/// <summary><c>pgllm plan</c>: per task, rows current, stale and never filled, and what re-running the stale rows would cost.</summary>
public sealed partial class PgLlmCommandLine
{
    /// <summary>The width of a figure's label in the plan's and the comparison's blocks.</summary>
    private const int FigureLabelWidth = 15;

    private Command CreatePlanCommand()
    {
        var task = new Option<string?>("--task", "-t") { Description = "Plan this task only (default: every task)." };
        var json = new Option<bool>("--json") { Description = "Print the plan as JSON (stable property names) for scripts." };
        var command = new Command(
            "plan",
            "Show per task the rows current, stale (written by an older definition) and never filled, and the tokens, cost and time of re-running the stale rows.");
        command.Options.Add(task);
        command.Options.Add(json);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var name = parseResult.GetValue(task);
            if (name is not null && !await KnownTaskAsync(dataSource, name, cancellationToken).ConfigureAwait(false))
            {
                return ExitUsage;
            }

            var plans = await PlanEstimator.ReadAsync(dataSource, options, name, cancellationToken).ConfigureAwait(false);
            if (parseResult.GetValue(json))
            {
                WriteRaw(PlanJson(plans));
                return ExitOk;
            }

            if (plans.Count == 0)
            {
                Say($"No tasks are registered (run 'pgllm migrate').");
                return ExitOk;
            }

            WritePlans(plans);
            return ExitOk;
        });
        return command;
    }

    /// <summary>
    /// Whether <paramref name="task"/> is registered; when not, says so in one line (the known tasks listed) for the
    /// caller to exit with <see cref="ExitUsage"/>: a task named on the command line is part of the command line.
    /// </summary>
    private async Task<bool> KnownTaskAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        try
        {
            await RequireTaskAsync(dataSource, task, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (CommandLineException ex)
        {
            WriteError(ex.Message);
            return false;
        }
    }

    /// <summary>One block per task: its name, then a line per figure, each within the console's width (80 columns too).</summary>
    private void WritePlans(IReadOnlyList<TaskPlan> plans)
    {
        for (var i = 0; i < plans.Count; i++)
        {
            var plan = plans[i];
            if (i > 0)
            {
                WriteRaw(string.Empty);
            }

            WriteRaw(plan.Task);
            var rows = plan.Rows;
            WriteFigure("model", plan.Model ?? "(default)");
            WriteFigure("rows", string.Create(CultureInfo.InvariantCulture,
                $"{rows.Total:N0}: {rows.Current:N0} current, {rows.Stale:N0} stale, {rows.NeverFilled:N0} never filled"));
            WriteFigure("edited cells", plan.EditedCells is { } edited ? edited.ToString("N0", CultureInfo.InvariantCulture) : "not counted", plan.EditedCells is null ? "needs edited cells" : null);
            var rerun = plan.Rerun;
            if (rerun.Rows == 0)
            {
                WriteFigure("re-run stale", "nothing to re-run");
                continue;
            }

            WriteFigure("re-run stale", string.Create(CultureInfo.InvariantCulture, $"{rerun.Rows:N0} rows"));
            WriteFigure("input tokens", string.Create(CultureInfo.InvariantCulture, $"~{rerun.InputTokens:N0}"), TokenBasis(rerun.InputSource, rerun));
            WriteFigure("output tokens", string.Create(CultureInfo.InvariantCulture, $"~{rerun.OutputTokens:N0}"), TokenBasis(rerun.OutputSource, rerun));
            WriteFigure("cost", TaskPlan.FormatCost(rerun.EstimatedCost), rerun.EstimatedCost is null ? "PgLlm:Prices or llm.model_price" : null);
            if (rerun.EstimatedBatchCost is { } batchCost)
            {
                WriteFigure("batch cost", TaskPlan.FormatCost(batchCost), "rerun --batch: batch prices, within the batch window");
            }
            WriteFigure("time", TaskPlan.FormatDuration(rerun.Duration), DurationBasis(rerun));
        }

        var stale = plans.Where(p => p.Rows.Stale > 0).ToList();
        if (stale.Count > 0)
        {
            // The next steps of a rollout: try the new definition on a sample, then re-run the stale rows.
            var name = stale.Count == 1 ? stale[0].Task : "TASK";
            WriteRaw(string.Empty);
            WriteRaw("Next: try the current definition on a sample, then re-run the stale rows:");
            WriteRaw($"  pgllm compare --task {name} --sample 20");
            WriteRaw($"  pgllm rerun --task {name} --stale");
        }
    }

    /// <summary>
    /// <c>  label          value (basis)</c> when it fits the console's width; otherwise the basis on a line of its own
    /// under the value, so that no line wraps and no figure is cut.
    /// </summary>
    private void WriteFigure(string label, string value, string? basis = null)
    {
        var width = Math.Max(40, _console.Profile.Width);
        var head = "  " + label.PadRight(FigureLabelWidth);
        if (head.Length + value.Length > width || label.Length >= FigureLabelWidth)
        {
            WriteRaw("  " + label);
            head = new string(' ', 2 + FigureLabelWidth);
        }

        if (basis is null)
        {
            WriteRaw(head + value);
        }
        else if (head.Length + value.Length + basis.Length + 3 <= width)
        {
            WriteRaw($"{head}{value} ({basis})");
        }
        else
        {
            WriteRaw(head + value);
            WriteRaw($"{new string(' ', 2 + FigureLabelWidth)}({basis})");
        }
    }

    private static string TokenBasis(TokenEstimateSource source, RerunEstimate rerun) => source switch
    {
        TokenEstimateSource.CurrentHistory => string.Create(CultureInfo.InvariantCulture, $"history: {rerun.HistoryJobs:N0} answers of this definition"),
        TokenEstimateSource.PromptLengthWithHistoryRatio => string.Create(CultureInfo.InvariantCulture, $"prompt length, {rerun.CharactersPerToken:0.##} chars a token"),
        TokenEstimateSource.PromptLengthDefaultRatio => string.Create(CultureInfo.InvariantCulture, $"prompt length, {rerun.CharactersPerToken:0.##} chars a token (default)"),
        TokenEstimateSource.AnyHistory => "history: answers of older definitions",
        TokenEstimateSource.SchemaGuess => "guessed from the answer's schema",
        _ => "nothing to estimate",
    };

    private static string DurationBasis(RerunEstimate rerun) => rerun.DurationSource switch
    {
        DurationSource.EndpointLimits => "at the endpoint's limits: " + rerun.DurationBasis,
        DurationSource.MeasuredLatency => "measured: " + rerun.DurationBasis,
        _ => "no rate limits set, no timings",
    };

    /// <summary>
    /// The plan as JSON: <c>{"tasks":[{"task","model","definitionHash","rows":{"total","current","stale","neverFilled"},
    /// "editedCells","rerun":{"rows","inputTokens","inputTokensFrom","outputTokens","outputTokensFrom","charactersPerToken",
    /// "historyJobs","estimatedCost","seconds","timeFrom","timeBasis"}}]}</c>; <c>editedCells</c> is null until edited
    /// cells are counted, <c>estimatedCost</c> null without prices, <c>seconds</c> null when unknown.
    /// </summary>
    internal static string PlanJson(IReadOnlyList<TaskPlan> plans)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("tasks");
            foreach (var plan in plans)
            {
                json.WriteStartObject();
                json.WriteString("task", plan.Task);
                json.WriteString("model", plan.Model);
                json.WriteString("definitionHash", plan.DefinitionHash);
                json.WriteStartObject("rows");
                json.WriteNumber("total", plan.Rows.Total);
                json.WriteNumber("current", plan.Rows.Current);
                json.WriteNumber("stale", plan.Rows.Stale);
                json.WriteNumber("neverFilled", plan.Rows.NeverFilled);
                json.WriteEndObject();
                WriteNumberOrNull(json, "editedCells", plan.EditedCells);
                WriteRerunJson(json, plan.Rerun);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void WriteRerunJson(Utf8JsonWriter json, RerunEstimate rerun)
    {
        json.WriteStartObject("rerun");
        json.WriteNumber("rows", rerun.Rows);
        json.WriteNumber("inputTokens", rerun.InputTokens);
        json.WriteString("inputTokensFrom", JsonNamingPolicy.CamelCase.ConvertName(rerun.InputSource.ToString()));
        json.WriteNumber("outputTokens", rerun.OutputTokens);
        json.WriteString("outputTokensFrom", JsonNamingPolicy.CamelCase.ConvertName(rerun.OutputSource.ToString()));
        WriteNumberOrNull(json, "charactersPerToken", rerun.CharactersPerToken is { } perToken ? (decimal)Math.Round(perToken, 3) : null);
        json.WriteNumber("historyJobs", rerun.HistoryJobs);
        WriteNumberOrNull(json, "estimatedCost", rerun.EstimatedCost);
        WriteNumberOrNull(json, "estimatedBatchCost", rerun.EstimatedBatchCost);
        WriteNumberOrNull(json, "seconds", rerun.Duration is { } duration ? (decimal)Math.Round(duration.TotalSeconds, 3) : null);
        json.WriteString("timeFrom", JsonNamingPolicy.CamelCase.ConvertName(rerun.DurationSource.ToString()));
        json.WriteString("timeBasis", rerun.DurationBasis);
        json.WriteEndObject();
    }
}
