namespace PgLlm;

/// <summary>
/// The endpoint's limits (section <c>PgLlm:RateLimit</c>). With the endpoint governor on (the default) they hold for
/// every worker process of the database together: each takes its permits in slices from one bucket per endpoint in
/// PostgreSQL, so in any rolling minute the endpoint receives at most the limit + 5 %; configure the provider's
/// limits as they are on every worker. With the governor off they hold for each worker process alone.
/// </summary>
public sealed class PgLlmRateLimitOptions
{
    /// <summary>Most requests per minute; null for no limit.</summary>
    public int? RequestsPerMinute { get; set; }

    /// <summary>Most tokens (input and output) per minute; null for no limit. Calls reserve an estimate and settle the difference afterwards.</summary>
    public int? TokensPerMinute { get; set; }

    /// <summary>How often a call the endpoint throttled (HTTP 429) is sent again before it counts as a failed attempt. 0 turns this off.</summary>
    public int ThrottleRetries { get; set; } = 5;

    /// <summary>The pause after a 429 without <c>Retry-After</c>; doubled for each 429 in a row.</summary>
    public TimeSpan ThrottleBackoff { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The longest pause after a 429 without <c>Retry-After</c>.</summary>
    public TimeSpan MaxThrottleBackoff { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>A model's price, for cost estimates (section <c>PgLlm:Prices:&lt;model&gt;</c>; the model <c>*</c> prices all others).</summary>
public sealed class PgLlmPrice
{
    /// <summary>Price of one million input tokens, in your currency.</summary>
    public decimal InputPerMillion { get; set; }

    /// <summary>Price of one million output tokens, in your currency.</summary>
    public decimal OutputPerMillion { get; set; }

    /// <summary>Price of one million input tokens answered through the batch tier; unset: half of <see cref="InputPerMillion"/>.</summary>
    public decimal? BatchInputPerMillion { get; set; }

    /// <summary>Price of one million output tokens answered through the batch tier; unset: half of <see cref="OutputPerMillion"/>.</summary>
    public decimal? BatchOutputPerMillion { get; set; }
}

/// <summary>
/// The batch tier (section <c>PgLlm:Batch</c>): jobs of tasks declared <c>Tier = LlmTier.Batch</c>, and of
/// <c>pgllm backfill --batch</c> / <c>pgllm rerun --batch</c>, are sent to the provider's Batch API (a JSONL file of
/// requests, answered within the completion window at about half the price) instead of one call each.
/// </summary>
public sealed class PgLlmBatchOptions
{
    /// <summary>Whether this worker runs the batch tier (true by default; any one worker of the database may).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The most request lines in one batch (the provider's limit: 50,000 for OpenAI).</summary>
    public int MaxLines { get; set; } = 50_000;

    /// <summary>The largest input file, in bytes (the provider's limit: 200 MB for OpenAI); a batch is cut before it.</summary>
    public long MaxBytes { get; set; } = 190L * 1024 * 1024;

    /// <summary>How long the oldest waiting job may wait before a batch smaller than <see cref="MaxLines"/> is sent.</summary>
    public TimeSpan MaxWait { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often a submitted batch's state is asked for.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The batch's completion window, as the provider names it (<c>24h</c>).</summary>
    public string CompletionWindow { get; set; } = "24h";

    /// <summary>How long the jobs in a batch are held before they are rescued: longer than the completion window.</summary>
    public TimeSpan JobLease { get; set; } = TimeSpan.FromHours(26);

    /// <summary>
    /// How long a worker holds a batch it moves on without touching it: a batch whose worker died is taken over by another
    /// after this (a worker that stops gracefully lets go of its batches at once). Longer than an upload of the largest file.
    /// </summary>
    public TimeSpan Lease { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Batches a job goes into before a failed or missing line is retried on the normal path instead.</summary>
    public int MaxTries { get; set; } = 2;
}

/// <summary>Health and metrics sampling (section <c>PgLlm:Monitoring</c>).</summary>
public sealed class PgLlmMonitoringOptions
{
    /// <summary>How often the hosted monitor counts the queue for the <c>pgllm.queue.depth</c> gauge.</summary>
    public TimeSpan QueueSampleInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// How often a hosted app logs a summary of what it did (jobs succeeded, retried, failed, tokens) at Information, when
    /// it did anything; null or zero turns it off. One minute by default.
    /// </summary>
    public TimeSpan? SummaryInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Pending jobs above which the health check reports Degraded; null never does.</summary>
    public long? DegradedQueueDepth { get; set; }

    /// <summary>How long a worker may go without asking the queue for work before the health check reports it Unhealthy; by default three poll intervals, at least one minute.</summary>
    public TimeSpan? WorkerStallAfter { get; set; }
}

/// <summary>
/// The optional answer cache (section <c>PgLlm:AnswerCache</c>, off by default): identical requests are
/// answered from the table <c>llm.answer_cache</c> instead of a new paid call.
/// </summary>
public sealed class PgLlmAnswerCacheOptions
{
    /// <summary>Whether answers are cached and reused. Off by default: a cached answer is reused even when the model would now answer differently.</summary>
    public bool Enabled { get; set; }

    /// <summary>How long a cached answer is reused; null for as long as it is in the table.</summary>
    public TimeSpan? TimeToLive { get; set; }
}

/// <summary>
/// A named endpoint (section <c>PgLlm:Endpoints:&lt;name&gt;</c>). A task whose <c>Model</c> is the endpoint's
/// name is sent there with the endpoint's <see cref="Model"/>; <c>&lt;name&gt;/&lt;model&gt;</c> picks another model on it.
/// </summary>
public sealed class PgLlmEndpointOptions
{
    /// <summary>The endpoint's base URL (OpenAI-compatible).</summary>
    public string? BaseUrl { get; set; }

    /// <summary>The endpoint's API key; never logged.</summary>
    public string? ApiKey { get; set; }

    /// <summary>The model asked when a task names only the endpoint.</summary>
    public string? Model { get; set; }

    /// <summary>The endpoint's own limits (each endpoint has its own budget and its own 429 pause).</summary>
    public PgLlmRateLimitOptions RateLimit { get; set; } = new();

    /// <summary>
    /// Most calls to this endpoint in flight at once in one worker; null for <see cref="PgLlmWorkerOptions.Concurrency"/>.
    /// Each endpoint has its own slots: a slow or failing endpoint fills only its own, and the worker goes on
    /// claiming the tasks of the others.
    /// </summary>
    public int? Concurrency { get; set; }
}

/// <summary>
/// The endpoint governor (section <c>PgLlm:Governor</c>), whose state every worker of the database shares in
/// <c>llm.endpoint_state</c>. An endpoint that fails <see cref="FailureThreshold"/> calls in a row (unreachable,
/// timed out, 408 or 5xx) within <see cref="FailureWindow"/> opens: its jobs wait without spending attempts and
/// one worker at a time probes it with one job, after <see cref="ProbeInterval"/>, doubled after each failed
/// probe up to <see cref="MaxProbeInterval"/>. A 401, 403 or out-of-quota 429 stops it until
/// <c>pgllm endpoint resume</c> or a changed configuration.
/// </summary>
public sealed class PgLlmGovernorOptions
{
    /// <summary>Whether the governor acts; on by default. Off, every failure is the job's failed attempt, as before.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Consecutive failed calls that open the endpoint's breaker.</summary>
    public int FailureThreshold { get; set; } = 5;

    /// <summary>The window those failures must fall in (counted from the first).</summary>
    public TimeSpan FailureWindow { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The wait before the first probe of an open endpoint.</summary>
    public TimeSpan ProbeInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The longest wait between probes.</summary>
    public TimeSpan MaxProbeInterval { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How often each worker reads the endpoints' shared state (a state change reaches the others within it).</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(1);
}
