using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PgLlm.Observability;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    private static readonly string[] StatusColumns =
        ["task", "model", "pending", "running", "succeeded", "failed", "superseded", "skipped", "oldest pending", "tokens in", "tokens out", "cost", "edited"];

    private Command CreateStatusCommand()
    {
        var watch = new Option<bool>("--watch", "-w") { Description = "Refresh with a progress bar per task until Ctrl+C (while a drain or backfill runs)." };
        var interval = new Option<double>("--interval") { Description = "Seconds between refreshes with --watch.", DefaultValueFactory = _ => 2 };
        var exitWhenIdle = new Option<bool>("--exit-when-idle") { Description = "With --watch: stop once no job is pending or running." };
        var json = new Option<bool>("--json") { Description = "Print the status as JSON (one object, stable property names) for scripts." };
        interval.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<double>() is not (> 0 and <= 3600))
            {
                result.AddError("--interval must be between 0 and 3600 seconds.");
            }
        });
        var command = new Command("status", "Show each task's jobs by state, the oldest pending job's age, the most frequent failures, tokens used, their estimated cost and the cells people edited.");
        command.Options.Add(watch);
        command.Options.Add(interval);
        command.Options.Add(exitWhenIdle);
        command.Options.Add(json);
        command.Validators.Add(result =>
        {
            if (result.GetValue(json) && result.GetValue(watch))
            {
                result.AddError("--json prints the status once: it does not combine with --watch.");
            }
        });
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var rows = await PgLlmStatus.ReadAsync(dataSource, options.Prices, cancellationToken).ConfigureAwait(false);
            if (parseResult.GetValue(json))
            {
                WriteRaw(StatusJson(
                    rows,
                    await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false),
                    await BudgetStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false),
                    await RunStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false),
                    await BatchStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false)));
                return ExitOk;
            }

            if (parseResult.GetValue(watch))
            {
                rows = await WatchAsync(
                    rows,
                    ct => PgLlmStatus.ReadAsync(dataSource, options.Prices, ct),
                    TimeSpan.FromSeconds(parseResult.GetValue(interval)),
                    parseResult.GetValue(exitWhenIdle),
                    cancellationToken).ConfigureAwait(false);
            }

            WriteStatus(rows);
            WriteEndpoints(await EndpointStatus.ReadAllAsync(dataSource, CancellationToken.None).ConfigureAwait(false));
            WriteBudgets(await BudgetStatus.ReadAllAsync(dataSource, CancellationToken.None).ConfigureAwait(false));
            WriteRuns(await RunStatus.ReadAllAsync(dataSource, CancellationToken.None).ConfigureAwait(false));
            WriteBatches(await BatchStatus.ReadAllAsync(dataSource, CancellationToken.None).ConfigureAwait(false), DateTimeOffset.UtcNow);
            return StoppedExitCode(cancellationToken);
        });
        return command;
    }

    /// <summary>
    /// The status as JSON: <c>{"tasks":[{"task","model","pending","running","succeeded","failed","superseded","skipped",
    /// "oldestPendingSeconds","inputTokens","outputTokens","estimatedCost","editedCells","topFailures":[{"error","count"}]}],
    /// "endpoints":[{"endpoint","state","reason","since","consecutiveFailures","nextProbeAt","pausedUntil",
    /// "rateLimits":[{"kind","perMinute","usedLastMinute"}]}],
    /// "budgets":[{"scope","name","day","dailyTokens","dailyCost","spentTokens","spentCost","reservedTokens","reservedCost",
    /// "tokensLeft","costLeft","state","reason"}],
    /// "runs":[{"id","task","kind","selection","rows","enqueued","skipped","pending","running","succeeded","failed","spent","maxCost","finished"}],
    /// "batches":[{"id","endpoint","model","state","providerStatus","lines","succeeded","failed","missing","createdAt","submittedAt",
    /// "expectedBy","finishedAt","cancelRequested","error"}]}</c>;
    /// <c>model</c>, <c>oldestPendingSeconds</c> and <c>estimatedCost</c> are null when unknown.
    /// </summary>
    internal static string StatusJson(
        IReadOnlyList<PgLlmTaskStatus> rows, IReadOnlyList<EndpointStatus>? endpoints = null, IReadOnlyList<BudgetStatus>? budgets = null, IReadOnlyList<RunStatus>? runs = null,
        IReadOnlyList<BatchStatus>? batches = null)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("tasks");
            foreach (var row in rows)
            {
                json.WriteStartObject();
                json.WriteString("task", row.Task);
                json.WriteString("model", row.Model);
                json.WriteNumber("pending", row.Pending);
                json.WriteNumber("running", row.Running);
                json.WriteNumber("succeeded", row.Succeeded);
                json.WriteNumber("failed", row.Failed);
                json.WriteNumber("superseded", row.Superseded);
                json.WriteNumber("skipped", row.Skipped);
                if (row.OldestPending is { } age)
                {
                    json.WriteNumber("oldestPendingSeconds", Math.Round(age.TotalSeconds, 3));
                }
                else
                {
                    json.WriteNull("oldestPendingSeconds");
                }

                json.WriteNumber("inputTokens", row.InputTokens);
                json.WriteNumber("outputTokens", row.OutputTokens);
                if (row.EstimatedCost is { } cost)
                {
                    json.WriteNumber("estimatedCost", cost);
                }
                else
                {
                    json.WriteNull("estimatedCost");
                }

                json.WriteNumber("editedCells", row.EditedCells);
                json.WriteStartArray("topFailures");
                foreach (var (error, count) in row.TopFailures)
                {
                    json.WriteStartObject();
                    json.WriteString("error", error);
                    json.WriteNumber("count", count);
                    json.WriteEndObject();
                }

                json.WriteEndArray();
                json.WriteEndObject();
            }

            json.WriteEndArray();
            WriteEndpointsJson(json, endpoints ?? []);
            WriteBudgetsJson(json, budgets ?? []);
            WriteRunsJson(json, runs ?? []);
            WriteBatchesJson(json, batches ?? []);
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>
    /// Follows the queue until Ctrl+C (or until idle with <paramref name="exitWhenIdle"/>). On a terminal: a live
    /// view, per task its name, a progress bar (jobs finished since the watch began out of those plus the ones
    /// still to do) and its counts, sized to the terminal's width. Piped: one plain line per task whenever its
    /// counts change.
    /// </summary>
    private async Task<IReadOnlyList<PgLlmTaskStatus>> WatchAsync(
        IReadOnlyList<PgLlmTaskStatus> rows,
        Func<CancellationToken, Task<IReadOnlyList<PgLlmTaskStatus>>> read,
        TimeSpan interval,
        bool exitWhenIdle,
        CancellationToken cancellationToken)
    {
        var baseline = rows.ToDictionary(r => r.Task, Finished, StringComparer.Ordinal);
        var live = IsTerminal && _console.Profile.Capabilities.Interactive;
        var printed = new Dictionary<string, string>(StringComparer.Ordinal);

        async Task<bool> StepAsync(Action<IRenderable> show)
        {
            if (live)
            {
                show(WatchView(rows, baseline));
            }
            else
            {
                foreach (var row in rows)
                {
                    var line = $"{row.Task} {Counts(row)}: {Percent(row, baseline)}%";
                    if (!printed.TryGetValue(row.Task, out var last) || last != line)
                    {
                        printed[row.Task] = line;
                        WriteRaw(line);
                    }
                }
            }

            if ((exitWhenIdle && rows.All(r => r.Pending + r.Running == 0)) || cancellationToken.IsCancellationRequested)
            {
                return false;
            }

            try
            {
                await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                rows = await read(cancellationToken).ConfigureAwait(false);
                return true;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return false;
            }
        }

        if (live)
        {
            await _console.Live(WatchView(rows, baseline)).AutoClear(false).Overflow(VerticalOverflow.Ellipsis).StartAsync(async context =>
            {
                while (await StepAsync(view =>
                {
                    context.UpdateTarget(view);
                    context.Refresh();
                }).ConfigureAwait(false))
                {
                }
            }).ConfigureAwait(false);
        }
        else
        {
            while (await StepAsync(_ => { }).ConfigureAwait(false))
            {
            }
        }

        return cancellationToken.IsCancellationRequested ? await read(CancellationToken.None).ConfigureAwait(false) : rows;
    }

    /// <summary>The live view: per task its name, then a bar, its percentage and its counts (on a line of their own when narrow).</summary>
    private Rows WatchView(IReadOnlyList<PgLlmTaskStatus> rows, Dictionary<string, long> baseline)
    {
        var width = Math.Max(20, _console.Profile.Width);
        var unicode = _console.Profile.Capabilities.Unicode;
        var lines = new List<IRenderable>();
        foreach (var row in rows)
        {
            var percent = Percent(row, baseline);
            var counts = Counts(row);
            var barWidth = Math.Clamp(width - 2 - 6, 10, 40);
            var filled = (int)Math.Round(barWidth * percent / 100.0);
            var bar = unicode
                ? $"[green]{new string('━', filled)}[/][grey]{new string('━', barWidth - filled)}[/]"
                : $"[green]{new string('#', filled)}[/][grey]{new string('-', barWidth - filled)}[/]";
            var percentText = string.Create(CultureInfo.InvariantCulture, $"{percent,4}%");
            lines.Add(new Markup($"[bold]{Markup.Escape(row.Task)}[/]") { Overflow = Overflow.Ellipsis });
            if (2 + barWidth + percentText.Length + 2 + counts.Length <= width)
            {
                lines.Add(new Markup($"  {bar}{percentText}  [grey]{Markup.Escape(counts)}[/]"));
            }
            else
            {
                lines.Add(new Markup($"  {bar}{percentText}"));
                lines.Add(new Markup($"  [grey]{Markup.Escape(counts)}[/]") { Overflow = Overflow.Ellipsis });
            }
        }

        return new Rows(lines);
    }

    private static string Counts(PgLlmTaskStatus row) =>
        string.Create(CultureInfo.InvariantCulture, $"{row.Pending} pending, {row.Running} running, {row.Failed} failed");

    /// <summary>Jobs finished since the watch began, out of those plus the ones still to do; 100 when nothing is left.</summary>
    private static int Percent(PgLlmTaskStatus row, Dictionary<string, long> baseline)
    {
        var done = Math.Max(0, Finished(row) - baseline.GetValueOrDefault(row.Task));
        var remaining = row.Pending + row.Running;
        return remaining == 0 ? 100 : (int)(100 * done / (done + remaining));
    }

    /// <summary>
    /// The status, in the layout that fits: one table when the output is a terminal wide enough for every
    /// column; otherwise (a narrow terminal, a pipe, a file) one block per task, a line per figure, that never
    /// wraps nor truncates a figure.
    /// </summary>
    private void WriteStatus(IReadOnlyList<PgLlmTaskStatus> rows)
    {
        if (rows.Count == 0)
        {
            Say($"No tasks are registered and the queue is empty (run 'pgllm migrate').");
            return;
        }

        var cells = rows.Select(Cells).ToList();
        var tableWidth = StatusColumns.Select((header, i) => Math.Max(header.Length, cells.Max(c => c[i].Length)) + 2).Sum() + StatusColumns.Length + 1;
        if (IsTerminal && tableWidth <= _console.Profile.Width)
        {
            var table = new Table().Border(TableBorder.Rounded);
            table.AddColumn(StatusColumns[0]);
            table.AddColumn(StatusColumns[1]);
            foreach (var column in StatusColumns.Skip(2))
            {
                table.AddColumn(new TableColumn(column).RightAligned());
            }

            foreach (var (row, cell) in rows.Zip(cells))
            {
                table.AddRow(cell.Select((text, i) => i == 5 && row.Failed > 0 ? $"[red]{Markup.Escape(text)}[/]" : Markup.Escape(text)).ToArray());
            }

            _console.Write(table);
        }
        else
        {
            var labelWidth = StatusColumns.Skip(1).Max(c => c.Length) + 2;
            for (var r = 0; r < rows.Count; r++)
            {
                if (r > 0)
                {
                    WriteRaw(string.Empty);
                }

                WriteRaw(cells[r][0]);
                for (var i = 1; i < StatusColumns.Length; i++)
                {
                    WriteRaw("  " + StatusColumns[i].PadRight(labelWidth) + cells[r][i]);
                }
            }
        }

        if (rows.All(r => r.EstimatedCost is null))
        {
            Say($"No prices configured (PgLlm:Prices or llm.model_price): cost not estimated.");
        }

        foreach (var row in rows.Where(r => r.TopFailures.Count > 0))
        {
            Say($"Top failures of {row.Task} (re-drive with 'pgllm retry --task {row.Task}'):");
            foreach (var (error, count) in row.TopFailures)
            {
                Say($"  {count} x {error}");
            }
        }
    }

    private static string[] Cells(PgLlmTaskStatus row) =>
    [
        row.Task,
        row.Model ?? "(default)",
        Number(row.Pending),
        Number(row.Running),
        Number(row.Succeeded),
        Number(row.Failed),
        Number(row.Superseded),
        Number(row.Skipped),
        row.OldestPending is { } age ? Age(age) : "-",
        Number(row.InputTokens),
        Number(row.OutputTokens),
        row.EstimatedCost is { } cost ? cost.ToString("0.0000", CultureInfo.InvariantCulture) : "-",
        Number(row.EditedCells),
    ];

    /// <summary>A line of markup: through the console on a terminal; as plain text (no wrapping, no markup) otherwise.</summary>
    private void Say(FormattableString text)
    {
        if (IsTerminal)
        {
            _console.MarkupLineInterpolated(text);
        }
        else
        {
            var arguments = text.GetArguments()
                .Select(a => (object)Markup.Escape(a is IFormattable formattable ? formattable.ToString(null, CultureInfo.InvariantCulture) : a?.ToString() ?? string.Empty))
                .ToArray();
            WriteRaw(Markup.Remove(string.Format(CultureInfo.InvariantCulture, text.Format, arguments)));
        }
    }

    private static long Finished(PgLlmTaskStatus row) => row.Succeeded + row.Failed + row.Superseded + row.Skipped;

    private static string Number(long value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private static string Age(TimeSpan age) => age switch
    {
        { TotalDays: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalDays}d {age.Hours}h"),
        { TotalHours: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalHours}h {age.Minutes}m"),
        { TotalMinutes: >= 1 } => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalMinutes}m {age.Seconds}s"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{(int)age.TotalSeconds}s"),
    };
}
