using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Hosting;
using PgLlm.Migrations;
using PgLlm.Observability;
using PgLlm.Queue;
using PgLlm.Worker;
using Spectre.Console;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    private Command CreateMigrateCommand()
    {
        var command = new Command("migrate", "Apply the queue's migrations and the generated scripts (every table's tasks). Safe to run at every deploy and from several machines at once.");
        command.Options.Add(_assembly);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var scripts = Scripts(parseResult);
            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var result = await new PgLlmMigrator(dataSource, scripts) { PlanOptions = options }.MigrateAsync(cancellationToken).ConfigureAwait(false);
            if (result.Applied.Count == 0)
            {
                Say($"[green]Up to date[/]: {result.ScriptCount} scripts, nothing to apply.");
            }
            else
            {
                foreach (var name in result.Applied)
                {
                    Say($"applied [blue]{name}[/]");
                }

                Say($"[green]Migrated[/]: {result.Applied.Count} of {result.ScriptCount} scripts applied.");
            }

            // A changed prompt, model or schema: what it leaves stale and what re-running it would cost, one line per task.
            foreach (var change in result.DefinitionChanges)
            {
                WriteRaw(change);
            }

            return 0;
        });
        return command;
    }

    private Command CreateScriptCommand()
    {
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "The folder to write the .sql files to (created if missing).", Required = true };
        var command = new Command("script", "Write the generated SQL to a folder, one file per script, for committing and review.");
        command.Options.Add(_assembly);
        command.Options.Add(output);
        SetAction(command, (parseResult, _) =>
        {
            var scripts = Scripts(parseResult);
            var folder = parseResult.GetValue(output)!;
            // Only files that changed are written, and only PgLlm's own stale files deleted: one line each.
            foreach (var change in PgLlmScriptFolder.Write(folder.FullName, scripts))
            {
                Say($"{change}");
            }

            Say($"[green]{scripts.Count} scripts[/] in {folder.FullName} (the others were up to date)");
            return Task.FromResult(0);
        });
        return command;
    }

    private Command CreateWorkerCommand()
    {
        var untilIdle = new Option<bool>("--until-idle") { Description = "Drain the queue (waiting out scheduled retries), then exit." };
        var concurrency = new Option<int?>("--concurrency") { Description = "Model calls in flight (default: PgLlm:Worker:Concurrency, 16)." };
        var command = new Command("worker", "Run the worker: claim jobs, call the model, write the answers. Ctrl+C stops it gracefully.");
        command.Options.Add(untilIdle);
        command.Options.Add(concurrency);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            if (parseResult.GetValue(concurrency) is { } count)
            {
                if (count < 1)
                {
                    throw new CommandLineException("--concurrency must be at least 1.");
                }

                options.Worker.Concurrency = count;
            }

            await using var dataSource = OpenDataSource(options);
            var tasks = await TaskNamesAsync(dataSource, cancellationToken).ConfigureAwait(false);
            IChatClient? check = null;
            try
            {
                check = ChatClientFactory.Create(options);
            }
            catch (InvalidOperationException ex)
            {
                throw new CommandLineException(ex.Message, ex);
            }
            finally
            {
                check?.Dispose();
            }

            await ProbeEndpointAsync(options, cancellationToken).ConfigureAwait(false);
            Say($"{tasks.Count} tasks; model endpoint {options.BaseUrl} reachable.");

            if (parseResult.GetValue(untilIdle))
            {
                return await DrainAsync(dataSource, options, cancellationToken).ConfigureAwait(false);
            }

            return await RunWorkerHostAsync(options, cancellationToken).ConfigureAwait(false);
        });
        return command;
    }

    /// <summary>
    /// Drains the queue once, then lists every job of the run that ended failed (id, task, error) on the error
    /// writer and exits with <see cref="ExitJobsFailed"/> when there is any.
    /// </summary>
    private async Task<int> DrainAsync(NpgsqlDataSource dataSource, PgLlmOptions options, CancellationToken cancellationToken)
    {
        DateTime startedAt;
        await using (var clock = dataSource.CreateCommand("SELECT clock_timestamp()"))
        {
            startedAt = (DateTime)(await clock.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }

        using var chatClient = ChatClientFactory.Create(options, dataSource);
        using var worker = new PgLlmWorker(dataSource, chatClient, Microsoft.Extensions.Options.Options.Create(options));
        var ran = await worker.RunUntilIdleAsync(cancellationToken).ConfigureAwait(false);

        var failures = new List<(long Id, string Task, string? Error)>();
        await using (var failed = dataSource.CreateCommand(
            "SELECT id, task, last_error FROM llm.job WHERE state = 'failed' AND finished_at >= $1 ORDER BY id"))
        {
            failed.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = startedAt });
            await using var reader = await failed.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                failures.Add((reader.GetInt64(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2)));
            }
        }

        foreach (var (id, task, error) in failures)
        {
            WriteError(string.Create(CultureInfo.InvariantCulture, $"job {id} of {task} failed: {error ?? "(no error recorded)"}"));
        }

        // A stopped endpoint (wrong key, no quota) left its jobs waiting: the drain could not do its work.
        var stopped = (await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false))
            .Where(e => e.State == "stopped" && (e.Endpoint == EndpointStatus.DefaultEndpoint || options.Endpoints.ContainsKey(e.Endpoint)))
            .ToList();
        foreach (var endpoint in stopped)
        {
            WriteError($"endpoint {endpoint.Endpoint} is stopped ({endpoint.Reason}): its jobs wait; fix it, then run 'pgllm endpoint resume {endpoint.Endpoint}'.");
        }

        await SayBudgetsWaitingAsync(dataSource, cancellationToken).ConfigureAwait(false);
        if (stopped.Count > 0 && failures.Count == 0)
        {
            Say($"[red]Not drained[/]: {ran} jobs run, 0 failed; a stopped endpoint's jobs wait (see 'pgllm endpoint list').");
            return ExitError;
        }

        if (failures.Count == 0)
        {
            Say($"[green]Drained[/]: {ran} jobs run, 0 failed.");
            return ExitOk;
        }

        Say(
            $"[red]Drained[/]: {ran} jobs run, {failures.Count} failed (dead letters: see 'pgllm status', re-drive with 'pgllm retry').");
        return ExitJobsFailed;
    }

    /// <summary>After a drain: one line per daily budget at its cap (its jobs wait, by design: no error, the exit code is unchanged).</summary>
    private async Task SayBudgetsWaitingAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        foreach (var budget in await BudgetStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false))
        {
            if (budget.Waiting)
            {
                Say($"[yellow]Budget {budget.Scope} {budget.Name} {budget.Describe()}[/]: its jobs wait (see 'pgllm budget list').");
            }
        }
    }

    /// <summary>Runs the worker as a host until Ctrl+C (or <paramref name="cancellationToken"/>).</summary>
    private async Task<int> RunWorkerHostAsync(PgLlmOptions options, CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Configuration = new ConfigurationManager() });
        builder.Configuration.AddConfiguration(_configuration);
        builder.Configuration[PgLlmOptions.SectionName + ":ConnectionString"] = options.ConnectionString;
        builder.Configuration["PGLLM_CONNECTION"] = options.ConnectionString;
        builder.Configuration[PgLlmOptions.SectionName + ":Worker:Concurrency"] = options.Worker.Concurrency.ToString(CultureInfo.InvariantCulture);
        if (options.BaseUrl is not null)
        {
            builder.Configuration[PgLlmOptions.SectionName + ":BaseUrl"] = options.BaseUrl;
            builder.Configuration["PGLLM_BASE_URL"] = options.BaseUrl;
        }

        if (options.ApiKey is not null)
        {
            builder.Configuration[PgLlmOptions.SectionName + ":ApiKey"] = options.ApiKey;
            builder.Configuration["PGLLM_API_KEY"] = options.ApiKey;
        }

        if (options.Model is not null)
        {
            builder.Configuration[PgLlmOptions.SectionName + ":Model"] = options.Model;
            builder.Configuration["PGLLM_MODEL"] = options.Model;
        }

        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Services.AddPgLlm(builder.Configuration);
        using var host = builder.Build();
        Say($"Worker {host.Services.GetRequiredService<PgLlmWorker>().WorkerId} draining the queue; Ctrl+C stops it.");
        await host.RunAsync(cancellationToken).ConfigureAwait(false);
        return StoppedExitCode(cancellationToken);
    }

    private Command CreateRetryCommand()
    {
        var all = new Option<bool>("--all") { Description = "Re-drive every failed job." };
        var task = new Option<string?>("--task", "-t") { Description = "Re-drive the failed jobs of this task." };
        var job = new Option<long?>("--job", "-j") { Description = "Re-drive this failed job." };
        var command = new Command("retry", "Put failed jobs (dead letters) back in the queue with a fresh set of attempts; their error history is kept.");
        command.Options.Add(all);
        command.Options.Add(task);
        command.Options.Add(job);
        command.Validators.Add(result =>
        {
            var chosen = (result.GetValue(all) ? 1 : 0) + (result.GetValue(task) is null ? 0 : 1) + (result.GetValue(job) is null ? 0 : 1);
            if (chosen != 1)
            {
                result.AddError("Say which failed jobs to re-drive: exactly one of --all, --task <name> or --job <id>.");
            }
        });
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var taskName = parseResult.GetValue(task);
            var jobId = parseResult.GetValue(job);
            if (taskName is not null)
            {
                await RequireTaskAsync(dataSource, taskName, cancellationToken).ConfigureAwait(false);
            }

            if (jobId is { } id)
            {
                await using var state = dataSource.CreateCommand("SELECT state FROM llm.job WHERE id = $1");
                state.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
                var current = await state.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string
                    ?? throw new CommandLineException($"there is no job {id} (finished jobs are pruned after PgLlm:Worker:Retention).");
                if (current != "failed")
                {
                    throw new CommandLineException($"job {id} is {current}, not failed: only failed jobs are re-driven.");
                }
            }

            var count = await new PgLlmQueueAdmin(dataSource).RetryFailedAsync(taskName, jobId, cancellationToken).ConfigureAwait(false);
            Say($"[green]Re-drove {count} failed jobs[/].");
            return 0;
        });
        return command;
    }

    private Command CreateBackfillCommand()
    {
        var task = new Option<string>("--task", "-t") { Description = "The task to backfill (see 'pgllm status').", Required = true };
        var allRows = new Option<bool>("--all-rows") { Description = "Enqueue every row, not only rows whose target columns are empty." };
        var batchSize = new Option<int>("--batch-size") { Description = "Rows per batch (one short transaction each).", DefaultValueFactory = _ => 1000 };
        var restart = new Option<bool>("--restart") { Description = "Start over from the first row instead of resuming an interrupted backfill." };
        var batchTier = new Option<bool>("--batch") { Description = "Send the jobs through the provider's Batch API (about half the price, answered within its completion window)." };
        batchSize.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 1)
            {
                result.AddError("--batch-size must be at least 1.");
            }
        });
        var command = new Command(
            "backfill",
            "Enqueue existing rows of a task's table, in batches. Safe to interrupt: running it again resumes after the last batch.");
        command.Options.Add(task);
        command.Options.Add(allRows);
        command.Options.Add(batchSize);
        command.Options.Add(restart);
        command.Options.Add(batchTier);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var name = parseResult.GetValue(task)!;
            var onlyEmpty = !parseResult.GetValue(allRows);
            var size = parseResult.GetValue(batchSize);
            await RequireTaskAsync(dataSource, name, cancellationToken).ConfigureAwait(false);
            var backfill = new PgLlmBackfill(dataSource) { BatchTier = parseResult.GetValue(batchTier) };
            var total = await backfill.CountRowsAsync(name, cancellationToken).ConfigureAwait(false) ?? 0;
            var resumedFrom = parseResult.GetValue(restart) ? 0 : await ResumePointAsync(dataSource, name, onlyEmpty, cancellationToken).ConfigureAwait(false);
            if (resumedFrom > 0)
            {
                Say($"Resuming the backfill of {name} after {resumedFrom} rows.");
            }

            PgLlmBackfillBatch? last = null;
            await _console.Progress()
                .AutoClear(false)
                // The bar takes what the task's name, the percentage and the time leave of the line (80 columns too).
                .Columns(
                    new TaskDescriptionColumn(),
                    new ProgressBarColumn { Width = Math.Clamp(_console.Profile.Width - name.Length - 20, 10, 40) },
                    new PercentageColumn(),
                    new RemainingTimeColumn())
                .StartAsync(async context =>
                {
                    var bar = context.AddTask(Markup.Escape(name), maxValue: Math.Max(1, total));
                    bar.Value = resumedFrom;
                    var first = true;
                    while (last is null || !last.Done)
                    {
                        if (cancellationToken.IsCancellationRequested)
                        {
                            return;
                        }

                        // A batch always runs to its commit: an interruption lands between batches.
                        last = await backfill.RunBatchAsync(name, onlyEmpty, size, first && parseResult.GetValue(restart), CancellationToken.None).ConfigureAwait(false);
                        first = false;
                        bar.MaxValue = Math.Max(bar.MaxValue, last.TotalScanned);
                        bar.Value = last.Done ? bar.MaxValue : last.TotalScanned;
                    }
                }).ConfigureAwait(false);

            if (last is null || !last.Done)
            {
                Say(
                    $"[yellow]Interrupted[/] after {last?.TotalScanned ?? resumedFrom} rows ({last?.TotalEnqueued ?? 0} jobs enqueued); run the same command again to resume.");
                return ExitInterrupted;
            }

            var where = backfill.BatchTier ? " for the batch tier ('pgllm batch list' follows them)" : string.Empty;
            Say($"[green]Backfilled {name}[/]: {last.TotalScanned} rows scanned, {last.TotalEnqueued} jobs enqueued{where}.");
            return 0;
        });
        return command;
    }

    private static async Task<long> ResumePointAsync(NpgsqlDataSource dataSource, string task, bool onlyEmpty, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT scanned FROM llm.backfill WHERE task = $1 AND only_empty = $2 AND finished_at IS NULL");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = onlyEmpty });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long scanned ? scanned : 0;
    }

    /// <summary>Asks the endpoint for its model list: any HTTP answer but 401/403 means it is reachable.</summary>
    internal static async Task ProbeEndpointAsync(PgLlmOptions options, CancellationToken cancellationToken)
    {
        var baseUrl = options.BaseUrl!.EndsWith('/') ? options.BaseUrl : options.BaseUrl + "/";
        var probeTimeout = TimeSpan.FromSeconds(10);
        using var http = new HttpClient { Timeout = probeTimeout };
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(new Uri(baseUrl), "models"));
        if (!string.IsNullOrEmpty(options.ApiKey))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        }

        try
        {
            using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
            {
                throw new CommandLineException(
                    $"the model endpoint {options.BaseUrl} refused the API key (HTTP {(int)response.StatusCode}): check PGLLM_API_KEY.");
            }
        }
        catch (HttpRequestException ex)
        {
            throw new CommandLineException($"cannot reach the model endpoint {options.BaseUrl}: {ex.Message}", ex);
        }
        catch (TaskCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            throw new CommandLineException($"the model endpoint {options.BaseUrl} did not answer within {probeTimeout.TotalSeconds:0} s.", ex);
        }
    }
}
