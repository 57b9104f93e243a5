using System.CommandLine;
using System.Globalization;
using PgLlm.Observability;
using Spectre.Console;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    private Command CreateStatusCommand()
    {
        var watch = new Option<bool>("--watch", "-w") { Description = "Refresh with a progress bar per task until Ctrl+C (while a drain or backfill runs)." };
        var interval = new Option<double>("--interval") { Description = "Seconds between refreshes with --watch.", DefaultValueFactory = _ => 2 };
        var exitWhenIdle = new Option<bool>("--exit-when-idle") { Description = "With --watch: stop once no job is pending or running." };
        interval.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<double>() is not (> 0 and <= 3600))
            {
                result.AddError("--interval must be between 0 and 3600 seconds.");
            }
        });
        var command = new Command("status", "Show each task's jobs by state, the oldest pending job's age, the most frequent failures, tokens used and their estimated cost.");
        command.Options.Add(watch);
        command.Options.Add(interval);
        command.Options.Add(exitWhenIdle);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var rows = await PgLlmStatus.ReadAsync(dataSource, options.Prices, cancellationToken).ConfigureAwait(false);
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
            return 0;
        });
        return command;
    }

    /// <summary>One progress bar per task: jobs finished since the watch began out of those plus the ones still to do.</summary>
    private async Task<IReadOnlyList<PgLlmTaskStatus>> WatchAsync(
        IReadOnlyList<PgLlmTaskStatus> rows,
        Func<CancellationToken, Task<IReadOnlyList<PgLlmTaskStatus>>> read,
        TimeSpan interval,
        bool exitWhenIdle,
        CancellationToken cancellationToken)
    {
        var baseline = rows.ToDictionary(r => r.Task, Finished, StringComparer.Ordinal);
        await _console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .StartAsync(async context =>
            {
                var bars = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                while (true)
                {
                    foreach (var row in rows)
                    {
                        var done = Math.Max(0, Finished(row) - baseline.GetValueOrDefault(row.Task));
                        var remaining = row.Pending + row.Running;
                        if (!bars.TryGetValue(row.Task, out var bar))
                        {
                            bar = bars[row.Task] = context.AddTask(Markup.Escape(row.Task), maxValue: 1);
                        }

                        bar.MaxValue = Math.Max(1, done + remaining);
                        bar.Value = remaining == 0 ? bar.MaxValue : done;
                        bar.Description = $"{Markup.Escape(row.Task)} [grey]{row.Pending} pending, {row.Running} running, {row.Failed} failed[/]";
                    }

                    if ((exitWhenIdle && rows.All(r => r.Pending + r.Running == 0)) || cancellationToken.IsCancellationRequested)
                    {
                        foreach (var bar in bars.Values)
                        {
                            bar.StopTask();
                        }

                        context.Refresh();
                        return;
                    }

                    try
                    {
                        await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                        rows = await read(cancellationToken).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                    {
                        return;
                    }
                }
            }).ConfigureAwait(false);
        return cancellationToken.IsCancellationRequested ? await read(CancellationToken.None).ConfigureAwait(false) : rows;
    }

    private void WriteStatus(IReadOnlyList<PgLlmTaskStatus> rows)
    {
        if (rows.Count == 0)
        {
            _console.MarkupLine("No tasks are registered and the queue is empty (run 'pgllm migrate').");
            return;
        }

        var table = new Table().Border(TableBorder.Rounded);
        table.AddColumn("task");
        table.AddColumn("model");
        foreach (var column in new[] { "pending", "running", "succeeded", "failed", "superseded", "skipped", "oldest pending", "tokens in", "tokens out", "cost" })
        {
            table.AddColumn(new TableColumn(column).RightAligned());
        }

        var anyCost = false;
        foreach (var row in rows)
        {
            anyCost |= row.EstimatedCost is not null;
            table.AddRow(
                Markup.Escape(row.Task),
                Markup.Escape(row.Model ?? "(default)"),
                Number(row.Pending),
                Number(row.Running),
                Number(row.Succeeded),
                row.Failed > 0 ? $"[red]{Number(row.Failed)}[/]" : "0",
                Number(row.Superseded),
                Number(row.Skipped),
                row.OldestPending is { } age ? Age(age) : "-",
                Number(row.InputTokens),
                Number(row.OutputTokens),
                row.EstimatedCost is { } cost ? cost.ToString("0.0000", CultureInfo.InvariantCulture) : "-");
        }

        _console.Write(table);
        if (!anyCost)
        {
            _console.MarkupLine("[grey]No prices configured (PgLlm:Prices:<model> or llm.model_price): cost not estimated.[/]");
        }

        foreach (var row in rows.Where(r => r.TopFailures.Count > 0))
        {
            _console.MarkupLineInterpolated($"[red]Top failures of {row.Task}[/] (re-drive with 'pgllm retry --task {row.Task}'):");
            foreach (var (error, count) in row.TopFailures)
            {
                _console.MarkupLineInterpolated($"  {count} x {error}");
            }
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
