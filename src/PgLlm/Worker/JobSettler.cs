using PgLlm.Completions;
using PgLlm.Failures;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Observability;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// Ends a job's attempt other than by its answer's write-back: skips a job with nothing to do, records a
/// failed attempt (retried with backoff), gives a job back unstarted; and reports each outcome (metrics,
/// log). If the database cannot be reached, the job is left running: its lease expires and it is rescued.
/// </summary>
internal sealed partial class JobSettler(NpgsqlDataSource dataSource, JobQueue queue, TaskRegistry registry, SecretRedactor redactor, PgLlmWorkerOptions options, ILogger logger)
{
    /// <summary>Pairs claimed jobs with their tasks and inputs; settles the jobs that have nothing to do.</summary>
    public async Task<List<CallWork>> PrepareAsync(IReadOnlyList<ClaimedWork> claimed)
    {
        var work = new List<CallWork>(claimed.Count);
        foreach (var (job, inputs, inputsError, tableProblem) in claimed)
        {
            // The claim is committed: these jobs are the worker's whatever a stop request says.
            var task = await registry.FindAsync(job.Task, CancellationToken.None).ConfigureAwait(false);
            if (tableProblem is not null)
            {
                // The table drifted from what the task was migrated for: no model call can be written back.
                var state = await SettleQuietlyAsync(() => queue.FailAsync(job, tableProblem, TimeSpan.Zero, FailureKind.Permanent, CancellationToken.None), job).ConfigureAwait(false);
                PgLlmMetrics.RecordSettled(job.Task, state);
                LogAttemptFailed(job.Id, job.Task, job.Attempt, job.MaxAttempts, state ?? "unknown", tableProblem);
            }
            else if (task is null)
            {
                await SettleQuietlyAsync(() => queue.SkipAsync(job, $"task '{job.Task}' is not in llm.task (removed from the declarations?)", CancellationToken.None), job).ConfigureAwait(false);
            }
            else if (inputsError is not null)
            {
                await SettleQuietlyAsync(() => queue.FailAsync(job, inputsError, RetryDelay(job.Attempt, null), FailureKind.Transient, CancellationToken.None), job).ConfigureAwait(false);
            }
            else if (inputs is null)
            {
                await SettleQuietlyAsync(() => queue.SkipAsync(job, "the row no longer exists, or an input the prompt needs is null", CancellationToken.None), job).ConfigureAwait(false);
            }
            else
            {
                work.Add(new CallWork(job, task, inputs));
            }
        }

        return work;
    }

    /// <summary>Gives a job back without spending its attempt (the worker stops).</summary>
    public Task ReleaseAsync(ClaimedJob job) => SettleQuietlyAsync(() => queue.ReleaseAsync(job, CancellationToken.None), job);

    /// <summary>
    /// Records a failed attempt: classified, its message redacted, retried after a backoff while its kind allows. The
    /// tokens of a call that answered (<paramref name="usage"/>, or an invalid answer's own) count in the job's.
    /// </summary>
    public async Task FailAsync(ClaimedJob job, Exception exception, ModelUsage? usage = null)
    {
        var failure = FailureClassifier.Classify(exception);
        failure = failure with { Message = redactor.Redact(failure.Message) };
        var delay = RetryDelay(job.Attempt, failure.RetryAfter);
        usage ??= (exception as InvalidAnswerException)?.Usage;
        var state = await SettleQuietlyAsync(() => queue.FailAsync(job, failure.Message, delay, failure.Kind, CancellationToken.None, usage), job).ConfigureAwait(false);
        PgLlmMetrics.RecordSettled(job.Task, state);
        LogAttemptFailed(job.Id, job.Task, job.Attempt, job.MaxAttempts, state ?? "unknown", failure.Message);
    }

    /// <summary>The write-back's outcome for one job: its new state, or the error that makes it a failed attempt.</summary>
    public async ValueTask WrittenAsync(WriteBack write, string? state, Exception? error)
    {
        if (error is not null && TableGate.IsSchemaError(error) && await TableProblemAsync(write.Task).ConfigureAwait(false) is { } problem)
        {
            // The write-back failed because the table drifted: not transient, and not the answer's fault.
            var failed = await SettleQuietlyAsync(() => queue.FailAsync(write.Job, problem, TimeSpan.Zero, FailureKind.Permanent, CancellationToken.None, write.Usage), write.Job).ConfigureAwait(false);
            PgLlmMetrics.RecordSettled(write.Job.Task, failed);
            LogAttemptFailed(write.Job.Id, write.Job.Task, write.Job.Attempt, write.Job.MaxAttempts, failed ?? "unknown", problem);
            return;
        }

        if (error is not null)
        {
            // The answer was paid for: its tokens count in the job's even though it was not written.
            await FailAsync(write.Job, error, write.Usage).ConfigureAwait(false);
            return;
        }

        PgLlmMetrics.RecordSettled(write.Job.Task, state);
        // Debug: the generated method returns at once when Debug is off, so the hot path allocates nothing for it.
        LogCompleted(write.Job.Id, write.Job.Task, state, write.InputTokens, write.OutputTokens);
    }

    /// <summary>The task's table checked again now (its verdict forgotten); null when it matches or cannot be checked.</summary>
    private async Task<string?> TableProblemAsync(TaskDefinition task)
    {
        queue.Tables.Forget(task.Name);
        try
        {
            await using var connection = await dataSource.OpenConnectionAsync(CancellationToken.None).ConfigureAwait(false);
            return await queue.Tables.ProblemAsync(connection, task, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException || DatabaseFault.IsConnectionFault(ex))
        {
            return null;
        }
    }

    /// <summary>Settles a job; if the database cannot be reached, the lease expires and the job is rescued later.</summary>
    private async Task<string?> SettleQuietlyAsync(Func<Task<string>> settle, ClaimedJob job)
    {
        try
        {
            return await settle().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException || DatabaseFault.IsConnectionFault(ex))
        {
            LogSettleFailed(ex, job.Id);
            return null;
        }
    }

    /// <summary>
    /// Exponential backoff with jitter (between half and all of the doubled delay), capped; never
    /// sooner than the endpoint's Retry-After.
    /// </summary>
    private TimeSpan RetryDelay(int attempt, TimeSpan? retryAfter)
    {
        var exponential = options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, Math.Max(0, attempt - 1));
        var capped = Math.Min(exponential, options.RetryMaxDelay.TotalMilliseconds);
        var delay = TimeSpan.FromMilliseconds((capped / 2) + (Random.Shared.NextDouble() * capped / 2));
        return retryAfter is { } minimum && minimum > delay ? minimum : delay;
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Job {JobId} of task {Task} finished as {State} ({InputTokens} input and {OutputTokens} output tokens)")]
    private partial void LogCompleted(long jobId, string task, string? state, int? inputTokens, int? outputTokens);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {JobId} of task {Task}, attempt {Attempt} of {MaxAttempts}, failed ({State}): {Error}")]
    private partial void LogAttemptFailed(long jobId, string task, int attempt, int maxAttempts, string state, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not settle job {JobId}; its lease will expire and another attempt will run")]
    private partial void LogSettleFailed(Exception exception, long jobId);
}
