using System.CommandLine;
using System.Globalization;
using Npgsql;
using PgLlm.Observability;
using PgLlm.Queue;
using Spectre.Console;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    /// <summary>How often <c>pgllm rerun</c> reads its run's progress while its jobs run.</summary>
    private static readonly TimeSpan RerunPoll = TimeSpan.FromMilliseconds(200);

    /// <summary>How a re-run's drive ended.</summary>
    private enum RerunEnd
    {
        Done,
        Capped,
        Interrupted,
    }

    private Command CreateRerunCommand()
    {
        var task = new Option<string>("--task", "-t") { Description = "The task whose rows to re-run (see 'pgllm status').", Required = true };
        var stale = new Option<bool>("--stale") { Description = "Re-run the rows written by an older definition of the task (prompt, model, schema, options)." };
        var neverFilled = new Option<bool>("--never-filled") { Description = "Run the rows the task never wrote (what 'pgllm backfill' enqueues, on this mechanism)." };
        var sample = new Option<long?>("--sample") { Description = "Only N of those rows: the first N in the order of the MD5 of their key (the same rows every time)." };
        var percent = new Option<decimal?>("--percent") { Description = "Only about P% of those rows: each row whose key's MD5 falls in the first P% (the same rows every time)." };
        var maxCost = new Option<decimal?>("--max-cost") { Description = "Stop enqueuing before the run's estimated cost (llm.model_price) would pass this; run again to resume." };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print what would be enqueued and its estimated cost; enqueue nothing." };
        var chunkSize = new Option<int>("--chunk-size") { Description = "Rows enqueued at a time (default 100; with --batch, 50,000).", DefaultValueFactory = _ => 100 };
        var batchTier = new Option<bool>("--batch") { Description = "Send the jobs through the provider's Batch API (about half the price, answered within its completion window)." };
        var command = new Command(
            "rerun",
            "Re-run a task's stale rows at low priority (live work first), within a cost cap, with progress. Safe to interrupt: running it again resumes.");
        foreach (var option in new Option[] { task, stale, neverFilled, sample, percent, maxCost, dryRun, chunkSize, batchTier })
        {
            command.Options.Add(option);
        }

        command.Validators.Add(result => ValidateRerun(result, stale, neverFilled, sample, percent, maxCost));
        chunkSize.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 1)
            {
                result.AddError("--chunk-size must be at least 1.");
            }
        });
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var name = parseResult.GetValue(task)!;
            await RequireTaskAsync(dataSource, name, cancellationToken).ConfigureAwait(false);
            if (options.Prices.Count > 0)
            {
                await PgLlmStatus.WritePricesAsync(dataSource, options.Prices, cancellationToken).ConfigureAwait(false);
            }

            var request = new RerunRequest(
                name, parseResult.GetValue(stale) ? "stale" : "never_filled", parseResult.GetValue(sample), parseResult.GetValue(percent),
                parseResult.GetValue(maxCost),
                parseResult.GetValue(batchTier) && parseResult.GetResult(chunkSize) is not { Implicit: false } ? BatchChunk : parseResult.GetValue(chunkSize));
            var rerun = new PgLlmRerun(dataSource) { BatchTier = parseResult.GetValue(batchTier) };
            if (parseResult.GetValue(dryRun))
            {
                await DryRunAsync(rerun, request, cancellationToken).ConfigureAwait(false);
                return ExitOk;
            }

            if (request.MaxCost is not null && !await HasPriceAsync(dataSource, name, cancellationToken).ConfigureAwait(false))
            {
                throw new CommandLineException(
                    $"--max-cost needs a price for the model of {name}: set PgLlm:Prices (or a row of llm.model_price, '*' for every model).");
            }

            return await RerunAsync(rerun, request, cancellationToken).ConfigureAwait(false);
        });
        return command;
    }

    /// <summary>Rows enqueued at a time for the batch tier: a batch's worth, so a chunk is not a batch of its own.</summary>
    private const int BatchChunk = 50_000;

    /// <summary>The rerun options that do not fit together, or a value out of range: one error (exit code 2).</summary>
    private static void ValidateRerun(
        System.CommandLine.Parsing.CommandResult result, Option<bool> stale, Option<bool> neverFilled, Option<long?> sample, Option<decimal?> percent, Option<decimal?> maxCost)
    {
        if (result.GetValue(stale) == result.GetValue(neverFilled))
        {
            result.AddError("Say which rows to re-run: exactly one of --stale or --never-filled.");
        }
        else if (result.GetValue(sample) is not null && result.GetValue(percent) is not null)
        {
            result.AddError("--sample and --percent both pick a subset: give one of them.");
        }
        else if (result.GetValue(sample) is < 1)
        {
            result.AddError("--sample must be at least 1.");
        }
        else if (result.GetValue(percent) is { } p && p is not (> 0 and <= 100))
        {
            result.AddError("--percent must be more than 0 and at most 100.");
        }
        else if (result.GetValue(maxCost) is < 0)
        {
            result.AddError("--max-cost cannot be negative.");
        }
    }

    /// <summary>What <c>pgllm rerun</c> was asked.</summary>
    private sealed record RerunRequest(string Task, string Which, long? Sample, decimal? Percent, decimal? MaxCost, int Chunk)
    {
        public string Rows => Which == "stale" ? "stale" : "never-filled";
    }

    private async Task DryRunAsync(PgLlmRerun rerun, RerunRequest request, CancellationToken cancellationToken)
    {
        var rows = await rerun.CountAsync(request.Task, request.Which, request.Sample, request.Percent, cancellationToken).ConfigureAwait(false);
        var (cost, jobs) = await rerun.JobCostAsync(null, request.Task, cancellationToken).ConfigureAwait(false);
        Say($"Dry run: would enqueue {rows} {request.Rows} rows of {request.Task} at low priority; nothing was enqueued.");
        if (cost is not { } perJob)
        {
            Say($"No cost estimate: the task has no answered job with a known price (PgLlm:Prices, llm.model_price).");
            return;
        }

        Say($"Estimated cost: {BudgetStatus.FormatCost(perJob * rows)} ({BudgetStatus.FormatCost(perJob)} a row, the average of the task's last {jobs} answers).");
        if (request.MaxCost is { } cap && perJob > 0 && perJob * rows > cap)
        {
            Say($"--max-cost {BudgetStatus.FormatCost(cap)} affords about {Math.Floor(cap / perJob).ToString(CultureInfo.InvariantCulture)} of them.");
        }
    }

    private async Task<int> RerunAsync(PgLlmRerun rerun, RerunRequest request, CancellationToken cancellationToken)
    {
        var run = await rerun.StartAsync(request.Task, request.Which, request.Sample, request.Percent, request.MaxCost, cancellationToken).ConfigureAwait(false);
        var progress = await rerun.ProgressAsync(run, cancellationToken).ConfigureAwait(false);
        if (progress.Position > 0)
        {
            Say($"Resuming re-run {run} of {request.Task}: {progress.Position} of {progress.Rows} rows walked, {SpentText(progress)} spent.");
        }

        var end = RerunEnd.Done;
        await _console.Progress()
            .AutoClear(false)
            // As backfill's: the bar takes what the task's name, the percentage and the time leave of the line.
            .Columns(
                new TaskDescriptionColumn(),
                new ProgressBarColumn { Width = Math.Clamp(_console.Profile.Width - request.Task.Length - 20, 10, 40) },
                new PercentageColumn(),
                new RemainingTimeColumn())
            .StartAsync(async context =>
            {
                var bar = context.AddTask(Markup.Escape(request.Task), maxValue: Math.Max(1, progress.Rows));
                end = await DriveRerunAsync(rerun, request, run, p =>
                {
                    bar.MaxValue = Math.Max(1, p.Rows);
                    bar.Value = Math.Min(bar.MaxValue, p.Handled);
                }, cancellationToken).ConfigureAwait(false);
            }).ConfigureAwait(false);

        progress = await rerun.ProgressAsync(run, CancellationToken.None).ConfigureAwait(false);
        switch (end)
        {
            case RerunEnd.Interrupted:
                Say($"[yellow]Interrupted[/]: {progress.Position} of {progress.Rows} rows walked, {SpentText(progress)} spent; jobs already enqueued run on. Run the same command again to resume.");
                return ExitInterrupted;
            case RerunEnd.Capped:
                Say($"[yellow]Stopped at the cost cap[/]: {SpentText(progress)} spent of {BudgetStatus.FormatCost(request.MaxCost ?? 0)}, {progress.Rows - progress.Position} of {progress.Rows} rows not enqueued. Run again with a higher --max-cost to go on.");
                return ExitOk;
            default:
                await rerun.FinishAsync(run, "done", CancellationToken.None).ConfigureAwait(false);
                Say($"[green]Re-ran {request.Task}[/]: {progress.Succeeded} rows written, {progress.Failed} failed, {progress.Skipped} passed over; {progress.InputTokens} tokens in, {progress.OutputTokens} out, {SpentText(progress)} spent.");
                return progress.Failed > 0 ? ExitJobsFailed : ExitOk;
        }
    }

    /// <summary>
    /// Enqueues the run's rows and follows its jobs until all are done, the cap is reached or the command is stopped.
    /// With a cap, a chunk is enqueued only once the previous one is finished (its spend known), and only as many rows
    /// as the rest of the cap affords at the run's cost per job (one row while no cost is known yet).
    /// </summary>
    private static async Task<RerunEnd> DriveRerunAsync(PgLlmRerun rerun, RerunRequest request, long run, Action<PgLlmRunProgress> show, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var progress = await rerun.ProgressAsync(run, CancellationToken.None).ConfigureAwait(false);
            show(progress);
            if (!progress.AllEnqueued && (request.MaxCost is null || !progress.InFlight))
            {
                var rows = request.MaxCost is { } cap ? await AffordableAsync(rerun, request, progress, cap).ConfigureAwait(false) : request.Chunk;
                if (rows == 0)
                {
                    return RerunEnd.Capped;
                }

                // A chunk always runs to its commit: an interruption lands between chunks.
                await rerun.EnqueueAsync(run, rows, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            if (progress.AllEnqueued && !progress.InFlight)
            {
                return RerunEnd.Done;
            }

            try
            {
                await Task.Delay(RerunPoll, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        return RerunEnd.Interrupted;
    }

    /// <summary>How many rows the rest of the cap affords now: 0 at the cap; one while no cost per job is known.</summary>
    private static async Task<int> AffordableAsync(PgLlmRerun rerun, RerunRequest request, PgLlmRunProgress progress, decimal cap)
    {
        var left = cap - (progress.Spent ?? 0);
        if (left <= 0)
        {
            return 0;
        }

        var (perJob, _) = await rerun.JobCostAsync(progress.Id, request.Task, CancellationToken.None).ConfigureAwait(false);
        return perJob switch
        {
            null => 1,
            <= 0 => request.Chunk,
            { } cost => (int)Math.Min(request.Chunk, Math.Floor(left / cost)),
        };
    }

    private static string SpentText(PgLlmRunProgress progress) =>
        progress.Spent is { } spent ? BudgetStatus.FormatCost(spent) : "no cost known";

    private static async Task<bool> HasPriceAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT input_per_million IS NOT NULL FROM llm.task_price($1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true;
    }
}
