namespace PgLlm;

/// <summary>
/// PgLlm's settings: configuration section <c>PgLlm</c>, overridden by the environment variables
/// <c>PGLLM_CONNECTION</c>, <c>PGLLM_BASE_URL</c>, <c>PGLLM_API_KEY</c> and <c>PGLLM_MODEL</c>.
/// </summary>
public sealed class PgLlmOptions
{
    /// <summary>The configuration section bound to these options.</summary>
    public const string SectionName = "PgLlm";

    /// <summary>
    /// The PostgreSQL connection string (<c>PGLLM_CONNECTION</c>): Npgsql's keywords (<c>Host=db;Database=app;Username=app</c>)
    /// or a URL (<c>postgres://user:password@host:5432/app?sslmode=require</c>, see <see cref="Hosting.PgLlmConnectionString"/>).
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>The OpenAI-compatible endpoint's base URL, e.g. <c>https://api.openai.com/v1</c> (<c>PGLLM_BASE_URL</c>).</summary>
    public string? BaseUrl { get; set; }

    /// <summary>The API key (<c>PGLLM_API_KEY</c>). Never logged, never written to the database.</summary>
    public string? ApiKey { get; set; }

    /// <summary>The default model for tasks that name none (<c>PGLLM_MODEL</c>).</summary>
    public string? Model { get; set; }

    /// <summary>How the worker drains the queue.</summary>
    public PgLlmWorkerOptions Worker { get; set; } = new();

    /// <summary>The endpoint's request and token limits, and what a 429 does.</summary>
    public PgLlmRateLimitOptions RateLimit { get; set; } = new();

    /// <summary>Optional prices per model (<c>*</c> for every other model), for cost estimates.</summary>
    public Dictionary<string, PgLlmPrice> Prices { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Queue depth sampling and health check thresholds.</summary>
    public PgLlmMonitoringOptions Monitoring { get; set; } = new();

    /// <summary>The optional answer cache (off by default).</summary>
    public PgLlmAnswerCacheOptions AnswerCache { get; set; } = new();

    /// <summary>Named endpoints besides the default one; a task's <c>Model</c> may name one (see <see cref="PgLlmEndpointOptions"/>).</summary>
    public Dictionary<string, PgLlmEndpointOptions> Endpoints { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The endpoint governor: circuit breaker and stop on auth or quota errors, shared by every worker (section <c>Governor</c>).</summary>
    public PgLlmGovernorOptions Governor { get; set; } = new();

    /// <summary>The batch tier: jobs answered through the provider's Batch API (section <c>PgLlm:Batch</c>).</summary>
    public PgLlmBatchOptions Batch { get; set; } = new();
}

/// <summary>How the worker drains the queue.</summary>
public sealed class PgLlmWorkerOptions
{
    /// <summary>
    /// Model calls in flight at once, per endpoint: the default endpoint's, and each named endpoint's unless
    /// it sets its own (<see cref="PgLlmEndpointOptions.Concurrency"/>).
    /// </summary>
    public int Concurrency { get; set; } = 16;

    /// <summary>Most jobs claimed in one statement.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>How often the queue is polled when no notification arrives.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a claimed job is the worker's before another worker may rescue it.</summary>
    public TimeSpan Lease { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>How long one model call may take.</summary>
    public TimeSpan ModelTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>The delay before the first retry; doubled on each attempt, with jitter.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The longest delay between two attempts.</summary>
    public TimeSpan RetryMaxDelay { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How long in-flight calls may finish after a stop is requested before their jobs are released.</summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often expired leases are looked for and old history is pruned.</summary>
    public TimeSpan RescueInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long succeeded, superseded and skipped jobs are kept as history; null keeps them forever. Failed jobs are always kept.</summary>
    public TimeSpan? Retention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// The largest rendered prompt, in UTF-8 bytes, the worker sends (<c>PgLlm:Worker:MaxPromptBytes</c>, 256 KiB by
    /// default). A job whose prompt is larger fails at once with an error saying so; the model is not called.
    /// </summary>
    public int MaxPromptBytes { get; set; } = 256 * 1024;

    /// <summary>The worker's name in <c>llm.job.locked_by</c>; host name and process id by default.</summary>
    public string? WorkerId { get; set; }
}
