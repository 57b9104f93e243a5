using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using PgLlm.Queue;

namespace PgLlm.Observability;

/// <summary>
/// PgLlm's metrics, on the meter <see cref="MeterName"/>. Job counters carry the tag <c>pgllm.task</c>.
/// Model calls are measured by Microsoft.Extensions.AI's OpenTelemetry stage under the same meter name
/// (<see cref="Completions.PgLlmChatClientBuilderExtensions.UsePgLlmTelemetry"/>), with OpenTelemetry's gen_ai
/// conventions: <c>gen_ai.client.operation.duration</c> in seconds and <c>gen_ai.client.token.usage</c> with
/// <c>gen_ai.token.type</c> = <c>input</c> or <c>output</c>.
/// Export them with OpenTelemetry (<c>AddMeter("PgLlm")</c>) or watch them with <c>dotnet-counters</c>.
/// </summary>
public static class PgLlmMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "PgLlm";

    /// <summary>The tag holding a task's name.</summary>
    public const string TaskTag = "pgllm.task";

    /// <summary>The counter of jobs whose answer was written.</summary>
    public const string SucceededName = "pgllm.jobs.succeeded";

    /// <summary>The counter of failed attempts that will be retried.</summary>
    public const string RetriedName = "pgllm.jobs.retried";

    /// <summary>The counter of jobs that failed for good.</summary>
    public const string FailedName = "pgllm.jobs.failed";

    /// <summary>The counter of jobs that ended without writing (superseded, skipped).</summary>
    public const string DiscardedName = "pgllm.jobs.discarded";

    private static readonly Meter Meter = new(MeterName, typeof(PgLlmMetrics).Assembly.GetName().Version?.ToString());

    private static readonly Counter<long> Claimed = Meter.CreateCounter<long>(
        "pgllm.jobs.claimed", "{job}", "Jobs claimed by a worker (each claim is one attempt).");

    private static readonly Counter<long> Succeeded = Meter.CreateCounter<long>(
        SucceededName, "{job}", "Jobs whose answer was written to the row.");

    private static readonly Counter<long> Retried = Meter.CreateCounter<long>(
        RetriedName, "{job}", "Failed attempts that will be retried.");

    private static readonly Counter<long> Failed = Meter.CreateCounter<long>(
        FailedName, "{job}", "Jobs that failed for good (dead letters).");

    private static readonly Counter<long> Discarded = Meter.CreateCounter<long>(
        DiscardedName, "{job}", "Jobs that ended without writing: superseded by newer inputs, or skipped.");

    private static readonly Counter<long> RateLimitWaits = Meter.CreateCounter<long>(
        "pgllm.rate_limit.throttled", "{response}", "HTTP 429 responses that paused the worker's model calls.");

    private static readonly Counter<long> RateLimitGranted = Meter.CreateCounter<long>(
        "pgllm.rate_limit.granted", "{permit}", "Permits (requests, tokens) this worker took from its endpoints' shared rate limits, tagged pgllm.endpoint and pgllm.rate_limit.kind.");

    private static readonly Counter<long> CacheLookups = Meter.CreateCounter<long>(
        "pgllm.cache.lookups", "{request}", "Answer cache lookups, tagged pgllm.cache.hit = true or false.");

    private static readonly ConcurrentDictionary<string, long> LastClaims = new(StringComparer.Ordinal);
    private static QueueDepth _queueDepth = new(0, 0, 0, DateTimeOffset.MinValue);

    static PgLlmMetrics()
    {
        Meter.CreateObservableGauge(
            "pgllm.queue.depth",
            () => new[]
            {
                new Measurement<long>(_queueDepth.Pending, new KeyValuePair<string, object?>("pgllm.job.state", "pending")),
                new Measurement<long>(_queueDepth.Running, new KeyValuePair<string, object?>("pgllm.job.state", "running")),
                new Measurement<long>(_queueDepth.Failed, new KeyValuePair<string, object?>("pgllm.job.state", "failed")),
            },
            "{job}",
            "Jobs in the queue by state, as last sampled.");
        Meter.CreateObservableGauge(
            "pgllm.endpoint.state",
            () => EndpointStates.Select(e => new Measurement<int>(e.Value, new KeyValuePair<string, object?>("pgllm.endpoint", e.Key))),
            "{state}",
            "Each endpoint's governor state as this process last saw it: 0 closed, 1 open (circuit breaker), 2 stopped (auth or quota).");
        Meter.CreateObservableGauge(
            "pgllm.budget.waiting",
            () => BudgetStates.Select(b => new Measurement<int>(b.Value, new KeyValuePair<string, object?>("pgllm.budget", b.Key))),
            "{budget}",
            "Each daily budget as this process last read it: 1 while its jobs wait at its cap, 0 otherwise.");
        Meter.CreateObservableGauge(
            "pgllm.batch.in_flight",
            () => new[]
            {
                new Measurement<long>(_batches.Batches, new KeyValuePair<string, object?>("pgllm.batch.unit", "batch")),
                new Measurement<long>(_batches.Lines, new KeyValuePair<string, object?>("pgllm.batch.unit", "line")),
            },
            "{item}",
            "The batch tier's open batches and their request lines, as last sampled.");
        Meter.CreateObservableGauge(
            "pgllm.batch.oldest_age",
            () => new Measurement<double>(_batches.OldestAge.TotalSeconds),
            "s",
            "How long the oldest open batch has been open, as last sampled (0 when none is).");
    }

    private static BatchDepth _batches = new(0, 0, TimeSpan.Zero);

    /// <summary>The batch tier's open batches, their lines and the oldest's age, for the <c>pgllm.batch.*</c> gauges.</summary>
    internal sealed record BatchDepth(long Batches, long Lines, TimeSpan OldestAge);

    /// <summary>Records the batch tier's open batches from their status (the hosted monitor samples them with the queue's depth).</summary>
    internal static void RecordBatches(IReadOnlyList<BatchStatus> batches, DateTimeOffset now)
    {
        var open = batches.Where(b => b.Open).ToList();
        Volatile.Write(ref _batches, new BatchDepth(open.Count, open.Sum(b => (long)b.Lines), open.Count == 0 ? TimeSpan.Zero : now - open.Min(b => b.CreatedAt)));
    }

    private static readonly ConcurrentDictionary<string, int> BudgetStates = new(StringComparer.Ordinal);

    /// <summary>
    /// Records the daily budgets for the <c>pgllm.budget.waiting</c> gauge: each by <c>scope name</c>, 1 when it waits at
    /// its cap; budgets no longer set are dropped.
    /// </summary>
    internal static void RecordBudgets(IReadOnlyCollection<(string Budget, bool Waiting)> budgets)
    {
        foreach (var (budget, waiting) in budgets)
        {
            BudgetStates[budget] = waiting ? 1 : 0;
        }

        foreach (var gone in BudgetStates.Keys.Where(k => !budgets.Any(b => b.Budget == k)).ToList())
        {
            BudgetStates.TryRemove(gone, out _);
        }
    }

    private static readonly ConcurrentDictionary<string, int> EndpointStates = new(StringComparer.Ordinal);

    /// <summary>Records an endpoint's governor state for the <c>pgllm.endpoint.state</c> gauge (0 closed, 1 open, 2 stopped).</summary>
    internal static void RecordEndpointState(string endpoint, int state) => EndpointStates[endpoint] = state;

    /// <summary>The queue depth last sampled by <see cref="QueueMonitor"/>.</summary>
    public static QueueDepth LastQueueDepth => Volatile.Read(ref _queueDepth);

    /// <summary>When the worker <paramref name="workerId"/> (in this process) last asked the queue for work; null if never.</summary>
    public static DateTimeOffset? LastClaimAt(string workerId) =>
        LastClaims.TryGetValue(workerId, out var ticks) ? new DateTimeOffset(ticks, TimeSpan.Zero) : null;

    /// <summary>A worker asked for work and got <paramref name="claimed"/>; also marks the worker alive.</summary>
    internal static void RecordClaimed(string workerId, IReadOnlyList<ClaimedWork> claimed)
    {
        LastClaims[workerId] = DateTimeOffset.UtcNow.UtcTicks;
        foreach (var work in claimed)
        {
            Claimed.Add(1, new KeyValuePair<string, object?>(TaskTag, work.Job.Task));
        }
    }

    /// <summary>A job's attempt ended in <paramref name="state"/> (what llm.complete / llm.fail / llm.skip returned).</summary>
    internal static void RecordSettled(string task, string? state)
    {
        var tag = new KeyValuePair<string, object?>(TaskTag, task);
        switch (state)
        {
            case "succeeded":
                Succeeded.Add(1, tag);
                break;
            case "pending":
                Retried.Add(1, tag);
                break;
            case "failed":
                Failed.Add(1, tag);
                break;
            case "superseded" or "skipped":
                Discarded.Add(1, tag, new KeyValuePair<string, object?>("pgllm.job.state", state));
                break;
            default:
                // 'lost' (the lease was taken over) or unknown (the database was unreachable): the
                // job's outcome is recorded by whichever worker settles it.
                break;
        }
    }

    /// <summary>An endpoint answered HTTP 429 and the calls through it paused.</summary>
    internal static void RecordThrottled(string? endpoint) =>
        RateLimitWaits.Add(1, new KeyValuePair<string, object?>("server.address", endpoint));

    /// <summary>This worker took <paramref name="permits"/> of an endpoint's shared rate limit (<paramref name="kind"/>: requests or tokens).</summary>
    internal static void RecordGranted(string endpoint, string kind, int permits)
    {
        if (permits > 0)
        {
            RateLimitGranted.Add(permits, new KeyValuePair<string, object?>("pgllm.endpoint", endpoint), new KeyValuePair<string, object?>("pgllm.rate_limit.kind", kind));
        }
    }

    /// <summary>An answer cache lookup found (or did not find) an answer.</summary>
    internal static void RecordCache(bool hit) =>
        CacheLookups.Add(1, new KeyValuePair<string, object?>("pgllm.cache.hit", hit));

    /// <summary>Stores a fresh sample of the queue depth for the <c>pgllm.queue.depth</c> gauge and the health check.</summary>
    internal static void RecordQueueDepth(QueueDepth depth) => Volatile.Write(ref _queueDepth, depth);
}

/// <summary>The queue's size at <see cref="SampledAt"/>.</summary>
/// <param name="Pending">Jobs waiting (including scheduled retries).</param>
/// <param name="Running">Jobs claimed by a worker.</param>
/// <param name="Failed">Dead letters.</param>
/// <param name="SampledAt">When the sample was taken; <see cref="DateTimeOffset.MinValue"/> before the first.</param>
public sealed record QueueDepth(long Pending, long Running, long Failed, DateTimeOffset SampledAt);
