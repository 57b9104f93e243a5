using System.Diagnostics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Observability;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// Drains the queue: claims jobs in a short transaction, calls the model with no transaction open,
/// and writes each answer back in its own short transaction. Wakes on LISTEN/NOTIFY, polls as a
/// fallback, and runs up to <see cref="PgLlmWorkerOptions.Concurrency"/> model calls at once.
/// Runs as a hosted service, or on its own through <see cref="RunAsync"/> and <see cref="RunUntilIdleAsync"/>.
/// </summary>
public sealed partial class PgLlmWorker : BackgroundService
{
    /// <summary>The channel the generated triggers notify when they enqueue a job.</summary>
    public const string JobsChannel = "pgllm_jobs";

    /// <summary>The channel migrations notify when the task registry changes.</summary>
    public const string TasksChannel = "pgllm_tasks";

    /// <summary>How soon a worker that wants to sleep looks again while an enqueuing transaction is still open.</summary>
    private static readonly TimeSpan UncommittedEnqueuerRecheck = TimeSpan.FromMilliseconds(5);

    private readonly NpgsqlDataSource _dataSource;
    private readonly PgLlmWorkerOptions _options;
    private readonly ILogger _logger;
    private readonly JobQueue _queue;
    private readonly TaskRegistry _registry;
    private readonly ModelCaller _model;
    private readonly string _workerId;
    private readonly WakeSignal _wake = new();
    private readonly SecretRedactor _redactor;
    private readonly EndpointLanes _lanes;

    /// <summary>Creates a worker.</summary>
    /// <param name="dataSource">The database holding the queue.</param>
    /// <param name="chatClient">The model access; see <see cref="ChatClientFactory"/> for the default.</param>
    /// <param name="options">Worker settings and the default model.</param>
    /// <param name="logger">Logs; none when null.</param>
    public PgLlmWorker(NpgsqlDataSource dataSource, IChatClient chatClient, IOptions<PgLlmOptions> options, ILogger<PgLlmWorker>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(chatClient);
        ArgumentNullException.ThrowIfNull(options);
        _dataSource = dataSource;
        _options = options.Value.Worker;
        if (_options.Concurrency < 1 || _options.BatchSize < 1)
        {
            throw new ArgumentException("PgLlm:Worker:Concurrency and PgLlm:Worker:BatchSize must be at least 1.", nameof(options));
        }

        if (_options.MaxPromptBytes < 1)
        {
            throw new ArgumentException("PgLlm:Worker:MaxPromptBytes must be at least 1.", nameof(options));
        }

        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _queue = new JobQueue(dataSource);
        _registry = new TaskRegistry(dataSource);
        _model = new ModelCaller(MeteredChatClient.Wrap(chatClient), options.Value.Model, _options.MaxPromptBytes);
        _redactor = new SecretRedactor(options.Value.ApiKey);
        _lanes = new EndpointLanes(options.Value);
        _workerId = _options.WorkerId ?? $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid().ToString("N")[..8]}";
    }

    /// <summary>This worker's name, as written in <c>llm.job.locked_by</c>.</summary>
    public string WorkerId => _workerId;

    /// <inheritdoc />
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => RunAsync(stoppingToken);

    /// <summary>Drains the queue until <paramref name="cancellationToken"/> is cancelled, then stops gracefully.</summary>
    public Task RunAsync(CancellationToken cancellationToken) => DrainAsync(untilIdle: false, cancellationToken);

    /// <summary>
    /// Drains until no job is pending or running (waiting out scheduled retries), then returns the
    /// number of jobs this worker ran (called the model for). For batch runs, tests and the example.
    /// </summary>
    public Task<int> RunUntilIdleAsync(CancellationToken cancellationToken = default) => DrainAsync(untilIdle: true, cancellationToken);

    private async Task<int> DrainAsync(bool untilIdle, CancellationToken stoppingToken)
    {
        // Jobs get their own token: on stop they have a grace period before being cancelled.
        using var jobsCancellation = new CancellationTokenSource();
        using var listenCancellation = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var listener = untilIdle ? Task.CompletedTask : Task.Run(() => ListenAsync(listenCancellation.Token), CancellationToken.None);
        using var writeBacks = new WriteBackBatcher(_queue, _lanes.CallsInFlight);
        var sleep = new SleepAdvertisement(_dataSource, _workerId);
        var lanes = _lanes.All;
        var taken = new int[lanes.Count];
        var started = new int[lanes.Count];
        var inFlight = new HashSet<Task>();
        var settled = 0;
        var nextMaintenance = Stopwatch.GetTimestamp();
        var failureDelay = TimeSpan.FromMilliseconds(200);
        var heldCap = 2 * _lanes.TotalConcurrency;

        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                // Jobs past their model call wait for their write-back without a slot; while the database
                // is slower than the model, at most as many again wait, and no more are claimed.
                int held;
                lock (inFlight)
                {
                    held = inFlight.Count;
                }

                if (held >= heldCap)
                {
                    await _wake.WaitAsync(_options.PollInterval, stoppingToken).ConfigureAwait(false);
                    continue;
                }

                // Take each endpoint's free slots, up to a batch each; with none free, wait for a model
                // call to end (each gives its slot back, then sets the wake signal).
                var anyFree = false;
                for (var i = 0; i < lanes.Count; i++)
                {
                    taken[i] = 0;
                    started[i] = 0;
                    if (!lanes[i].WorthClaiming)
                    {
                        continue;
                    }

                    while (taken[i] < _options.BatchSize && lanes[i].Slots.Wait(0, CancellationToken.None))
                    {
                        taken[i]++;
                    }

                    anyFree |= taken[i] > 0;
                }

                if (!anyFree)
                {
                    await _wake.WaitAsync(_options.PollInterval, stoppingToken).ConfigureAwait(false);
                    continue;
                }

                // Every slot taken above is either handed to a started job or given back in finally.
                try
                {
                    if (Stopwatch.GetElapsedTime(nextMaintenance) >= TimeSpan.Zero)
                    {
                        nextMaintenance = Stopwatch.GetTimestamp() + (long)(_options.RescueInterval.TotalSeconds * Stopwatch.Frequency);
                        await MaintainAsync(stoppingToken).ConfigureAwait(false);
                    }

                    if (_lanes.NeedsTasks)
                    {
                        _lanes.Update(await _registry.AllAsync(stoppingToken).ConfigureAwait(false));
                    }

                    var claimedAny = false;
                    var drained = true;
                    for (var i = 0; i < lanes.Count; i++)
                    {
                        var lane = lanes[i];
                        if (taken[i] == 0 || !lane.CanClaim)
                        {
                            continue;
                        }

                        var jobs = await _queue.ClaimAsync(_workerId, taken[i], _options.Lease, lane.Filter, _registry.FindAsync, stoppingToken).ConfigureAwait(false);
                        PgLlmMetrics.RecordClaimed(_workerId, jobs);
                        claimedAny |= jobs.Count > 0;
                        drained &= jobs.Count < taken[i];
                        // The claim's jobs start together on one pool thread, one after another up to their first
                        // wait (a call slot, the model's answer), rather than each waking a thread of its own.
                        var start = new TaskCompletionSource();
                        var startedBefore = started[i];
                        try
                        {
                            foreach (var work in await PrepareAsync(jobs, stoppingToken).ConfigureAwait(false))
                            {
                                lane.JobClaimed();
                                var task = ProcessAfterAsync(start.Task, work, writeBacks, lane, jobsCancellation.Token, stoppingToken);
                                started[i]++;
                                lock (inFlight)
                                {
                                    inFlight.Add(task);
                                }

                                _ = task.ContinueWith(
                                    t =>
                                    {
                                        bool wasAtCap, last;
                                        lock (inFlight)
                                        {
                                            wasAtCap = inFlight.Count >= heldCap;
                                            inFlight.Remove(t);
                                            last = inFlight.Count == 0;
                                        }

                                        Interlocked.Increment(ref settled);
                                        // The loop waits for a job to end only at the cap of held jobs, or (draining until
                                        // idle) for the last one; otherwise it claims when a lane is worth claiming for.
                                        if (wasAtCap || last || lane.WorthClaiming)
                                        {
                                            _wake.Set();
                                        }
                                    },
                                    CancellationToken.None,
                                    TaskContinuationOptions.ExecuteSynchronously,
                                    TaskScheduler.Default);
                            }
                        }
                        finally
                        {
                            // An empty claim started nothing: no thread to wake.
                            if (started[i] > startedBefore)
                            {
                                ThreadPool.UnsafeQueueUserWorkItem(static s => s.TrySetResult(), start, preferLocal: false);
                            }
                        }
                    }

                    if (!claimedAny)
                    {
                        int running;
                        lock (inFlight)
                        {
                            running = inFlight.Count;
                        }

                        var wait = _options.PollInterval;
                        if (untilIdle && running == 0)
                        {
                            var (anyRunning, nextDue) = await _queue.PeekAsync(stoppingToken).ConfigureAwait(false);
                            if (!anyRunning && nextDue is null)
                            {
                                break;
                            }

                            wait = Min(nextDue ?? wait, wait);
                        }
                        else if (!untilIdle && !sleep.Safe)
                        {
                            // Enqueuers notify only a sleeping worker: advertise, then claim once more
                            // before sleeping, or look again shortly while an enqueuer that saw no
                            // sleeping worker has yet to commit.
                            if (await sleep.AdvertiseAsync(stoppingToken).ConfigureAwait(false))
                            {
                                continue;
                            }

                            wait = Min(UncommittedEnqueuerRecheck, wait);
                        }

                        if (!await _wake.WaitAsync(wait, stoppingToken).ConfigureAwait(false))
                        {
                            // Slept a whole poll interval: advertise again, which refreshes the
                            // advertisement (stale ones are dropped after an hour).
                            sleep.Safe = false;
                        }

                        continue;
                    }

                    failureDelay = TimeSpan.FromMilliseconds(200);
                    if (drained && !untilIdle && sleep.SafeAndFresh)
                    {
                        // Woken from sleep, and every claim took fewer jobs than it asked for: the queue is
                        // empty again. Stay advertised and wait for the next notification, rather than
                        // withdrawing, claiming again and advertising again (three round trips per job for
                        // a worker that keeps up, competing with the job just started).
                        if (!await _wake.WaitAsync(_options.PollInterval, stoppingToken).ConfigureAwait(false))
                        {
                            sleep.Safe = false;
                        }

                        continue;
                    }

                    // Busy again: enqueuers stop notifying (each NOTIFY serializes their commits).
                    await sleep.WithdrawAsync(stoppingToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is NpgsqlException or TimeoutException && !stoppingToken.IsCancellationRequested)
                {
                    // The database is unreachable or a statement was cancelled. Claimed jobs not yet
                    // started stay 'running' until their lease expires and are then rescued.
                    LogDatabaseError(ex, failureDelay);
                    await Task.Delay(failureDelay, stoppingToken).ConfigureAwait(false);
                    failureDelay = TimeSpan.FromTicks(Math.Min(failureDelay.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
                }
                finally
                {
                    for (var i = 0; i < lanes.Count; i++)
                    {
                        if (taken[i] > started[i])
                        {
                            lanes[i].Slots.Release(taken[i] - started[i]);
                        }
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            Task[] remaining;
            lock (inFlight)
            {
                remaining = inFlight.ToArray();
            }

            if (remaining.Length > 0)
            {
                // Stop claiming; let in-flight calls finish within the grace period, then cancel them
                // (their jobs are released, not failed).
                var all = Task.WhenAll(remaining);
                if (await Task.WhenAny(all, Task.Delay(_options.ShutdownGrace, CancellationToken.None)).ConfigureAwait(false) != all)
                {
                    await jobsCancellation.CancelAsync().ConfigureAwait(false);
                }

                await all.ConfigureAwait(false);
            }

            // Every job has handed in its answer; the last write-backs commit before the worker returns.
            await writeBacks.CompleteAndDrainAsync().ConfigureAwait(false);
            await _queue.CloseClaimConnectionAsync().ConfigureAwait(false);
            try
            {
                await sleep.WithdrawAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
            {
                // Left behind, the advertisement only makes enqueuers notify; it expires after an hour.
                LogDatabaseError(ex, TimeSpan.Zero);
            }

            await listenCancellation.CancelAsync().ConfigureAwait(false);
            await listener.ConfigureAwait(false);
        }

        return settled;
    }

    /// <summary>Rescues jobs whose lease expired and prunes old history.</summary>
    private async Task MaintainAsync(CancellationToken cancellationToken)
    {
        var rescued = await _queue.RescueAsync(cancellationToken).ConfigureAwait(false);
        if (rescued > 0)
        {
            LogRescued(rescued);
        }

        if (_options.Retention is { } retention)
        {
            await _queue.PruneAsync(retention, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Pairs claimed jobs with their tasks and inputs; settles jobs with nothing to do.</summary>
    private async Task<List<Work>> PrepareAsync(IReadOnlyList<ClaimedWork> claimed, CancellationToken cancellationToken)
    {
        var work = new List<Work>(claimed.Count);
        foreach (var (job, inputs, inputsError) in claimed)
        {
            var task = await _registry.FindAsync(job.Task, cancellationToken).ConfigureAwait(false);
            if (task is null)
            {
                await SettleQuietlyAsync(() => _queue.SkipAsync(job, $"task '{job.Task}' is not in llm.task (removed from the declarations?)", CancellationToken.None), job).ConfigureAwait(false);
            }
            else if (inputsError is not null)
            {
                await SettleQuietlyAsync(() => _queue.FailAsync(job, inputsError, RetryDelay(job.Attempt, null), FailureKind.Transient, CancellationToken.None), job).ConfigureAwait(false);
            }
            else if (inputs is null)
            {
                await SettleQuietlyAsync(() => _queue.SkipAsync(job, "the row no longer exists, or an input the prompt needs is null", CancellationToken.None), job).ConfigureAwait(false);
            }
            else
            {
                work.Add(new Work(job, task, inputs));
            }
        }

        return work;
    }

    private async Task ProcessAfterAsync(Task start, Work work, WriteBackBatcher writeBacks, EndpointLanes.Lane lane, CancellationToken jobsToken, CancellationToken stoppingToken)
    {
        await start.ConfigureAwait(false);
        await ProcessAsync(work, writeBacks, lane, jobsToken, stoppingToken).ConfigureAwait(false);
    }

    private async Task ProcessAsync(Work work, WriteBackBatcher writeBacks, EndpointLanes.Lane lane, CancellationToken jobsToken, CancellationToken stoppingToken)
    {
        var (job, task, inputs) = work;
        var calling = false;
        try
        {
            ModelAnswer answer;
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(jobsToken))
            {
                try
                {
                    // A job claimed ahead waits here for a call slot; once the worker stops, it is given back.
                    await lane.Calls.WaitAsync(stoppingToken).ConfigureAwait(false);
                    calling = true;
                    lane.JobLeftWaiting();
                    timeout.CancelAfter(_options.ModelTimeout);
                    answer = await _model.AskAsync(task, inputs.Values, timeout.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (calling && !jobsToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"the model did not answer within {_options.ModelTimeout.TotalSeconds:0.#} s");
                }
                finally
                {
                    // The slots are the endpoint's: free them as soon as the call ends, so the next claim
                    // overlaps this job's write-back instead of waiting for it.
                    if (calling)
                    {
                        lane.Calls.Release();
                    }
                    else
                    {
                        lane.JobLeftWaiting();
                    }

                    lane.Slots.Release();
                    // Wake the claim loop only when it would claim: a slow model's calls end one at a time, and
                    // woken for each, the loop found nothing worth claiming and went back to sleep.
                    if (lane.WorthClaiming)
                    {
                        _wake.Set();
                    }
                }
            }

            // Written together with other answers that are ready at the same moment; this job's
            // outcome (state or error) is still its own.
            var state = await writeBacks.CompleteAsync(new WriteBack(task, job, inputs.Hash, answer.Json, answer.InputTokens, answer.OutputTokens)).ConfigureAwait(false);
            PgLlmMetrics.RecordSettled(job.Task, state);
            LogCompleted(job.Id, job.Task, state);
        }
        catch (OperationCanceledException) when (jobsToken.IsCancellationRequested || (!calling && stoppingToken.IsCancellationRequested))
        {
            await SettleQuietlyAsync(() => _queue.ReleaseAsync(job, CancellationToken.None), job).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            var failure = FailureClassifier.Classify(ex);
            failure = failure with { Message = _redactor.Redact(failure.Message) };
            var delay = RetryDelay(job.Attempt, failure.RetryAfter);
            var state = await SettleQuietlyAsync(() => _queue.FailAsync(job, failure.Message, delay, failure.Kind, CancellationToken.None), job).ConfigureAwait(false);
            PgLlmMetrics.RecordSettled(job.Task, state);
            LogAttemptFailed(job.Id, job.Task, job.Attempt, job.MaxAttempts, state ?? "unknown", failure.Message);
        }
    }

    /// <summary>Settles a job; if the database is unreachable the lease expires and the job is rescued later.</summary>
    private async Task<string?> SettleQuietlyAsync(Func<Task<string>> settle, ClaimedJob job)
    {
        try
        {
            return await settle().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            LogSettleFailed(ex, job.Id);
            return null;
        }
    }

    private async Task ListenAsync(CancellationToken cancellationToken)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
                connection.Notification += (_, e) =>
                {
                    if (e.Channel == TasksChannel)
                    {
                        _registry.Invalidate();
                    }

                    _wake.Set();
                };
                await using (var listen = new NpgsqlCommand($"LISTEN {JobsChannel}; LISTEN {TasksChannel}", connection))
                {
                    await listen.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                // Jobs may have arrived while nobody was listening.
                _wake.Set();
                delay = TimeSpan.FromMilliseconds(200);
                while (true)
                {
                    await connection.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException or System.IO.IOException)
            {
                LogDatabaseError(ex, delay);
                try
                {
                    await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            }
        }
    }

    /// <summary>
    /// Exponential backoff with jitter (between half and all of the doubled delay), capped; never
    /// sooner than the endpoint's Retry-After.
    /// </summary>
    private TimeSpan RetryDelay(int attempt, TimeSpan? retryAfter)
    {
        var exponential = _options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, Math.Max(0, attempt - 1));
        var capped = Math.Min(exponential, _options.RetryMaxDelay.TotalMilliseconds);
        var delay = TimeSpan.FromMilliseconds((capped / 2) + (Random.Shared.NextDouble() * capped / 2));
        return retryAfter is { } minimum && minimum > delay ? minimum : delay;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    [LoggerMessage(Level = LogLevel.Debug, Message = "Job {JobId} of task {Task} finished as {State}")]
    private partial void LogCompleted(long jobId, string task, string state);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId} of task {Task}, attempt {Attempt} of {MaxAttempts}, failed ({State}): {Error}")]
    private partial void LogAttemptFailed(long jobId, string task, int attempt, int maxAttempts, string state, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Database unavailable; retrying in {Delay}")]
    private partial void LogDatabaseError(Exception exception, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not settle job {JobId}; its lease will expire and another attempt will run")]
    private partial void LogSettleFailed(Exception exception, long jobId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Rescued {Count} jobs whose lease expired")]
    private partial void LogRescued(int count);

    /// <inheritdoc />
    public override void Dispose()
    {
        _registry.Dispose();
        _queue.Dispose();
        base.Dispose();
    }

    private sealed record Work(ClaimedJob Job, TaskDefinition Task, JobInputs Inputs);
}
