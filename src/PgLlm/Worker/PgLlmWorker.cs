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
/// Drains the queue as a pipeline (see <see cref="WorkerPipeline"/>): per endpoint, a claim loop claims jobs in
/// a short transaction and hands them to a fixed set of call runners, which call the model with no
/// transaction open and hand each answer to the write-back batcher, which writes answers that are ready
/// together in one short transaction. Wakes on LISTEN/NOTIFY, polls as a fallback, and runs up to
/// <see cref="PgLlmWorkerOptions.Concurrency"/> model calls at once per endpoint. A database fault never ends
/// it: every stage backs off and reconnects. Runs as a hosted service, or on its own through
/// <see cref="RunAsync"/> and <see cref="RunUntilIdleAsync"/>.
/// </summary>
public sealed class PgLlmWorker : BackgroundService
{
    /// <summary>The channel the generated triggers notify when they enqueue a job.</summary>
    public const string JobsChannel = "pgllm_jobs";

    /// <summary>The channel migrations notify when the task registry changes.</summary>
    public const string TasksChannel = "pgllm_tasks";

    private readonly PgLlmOptions _allOptions;
    private readonly PipelineContext _context;
    private readonly QueueMaintenance _maintenance;

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
        _allOptions = options.Value;
        var worker = _allOptions.Worker;
        if (worker.Concurrency < 1 || worker.BatchSize < 1)
        {
            throw new ArgumentException("PgLlm:Worker:Concurrency and PgLlm:Worker:BatchSize must be at least 1.", nameof(options));
        }

        if (worker.MaxPromptBytes < 1)
        {
            throw new ArgumentException("PgLlm:Worker:MaxPromptBytes must be at least 1.", nameof(options));
        }

        // Checks each endpoint's concurrency and the governor's settings now rather than at the first run.
        _ = new EndpointLanes(_allOptions);
        EndpointGovernor.Validate(_allOptions.Governor);
        var log = (ILogger?)logger ?? NullLogger.Instance;
        var queue = new JobQueue(dataSource);
        var registry = new TaskRegistry(dataSource);
        var workerId = worker.WorkerId ?? $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid().ToString("N")[..8]}";
        var settler = new JobSettler(dataSource, queue, registry, WorkerPipeline.SecretRedactorOf(_allOptions), worker, log);
        var model = new ModelCaller(ChatClientFactory.WithTelemetry(chatClient), _allOptions.Model, worker.MaxPromptBytes);
        _context = new PipelineContext(dataSource, queue, registry, model, settler, worker, workerId, TimeProvider.System, log);
        _maintenance = new QueueMaintenance(dataSource, worker, log);
    }

    /// <summary>This worker's name, as written in <c>llm.job.locked_by</c>.</summary>
    public string WorkerId => _context.WorkerId;

    /// <summary>
    /// Whether the hosted worker rescues and prunes itself; false when <c>AddPgLlm</c> registered
    /// <see cref="QueueMaintenance"/> as a hosted service of its own.
    /// </summary>
    internal bool HostedMaintenance { get; set; } = true;

    /// <inheritdoc />
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        new WorkerPipeline(_context, _allOptions, untilIdle: false).RunAsync(HostedMaintenance ? _maintenance : null, stoppingToken);

    /// <summary>Drains the queue until <paramref name="cancellationToken"/> is cancelled, then stops gracefully.</summary>
    public Task RunAsync(CancellationToken cancellationToken) =>
        new WorkerPipeline(_context, _allOptions, untilIdle: false).RunAsync(_maintenance, cancellationToken);

    /// <summary>
    /// Drains until no job is pending or running (waiting out scheduled retries), then returns the
    /// number of jobs this worker ran (called the model for). For batch runs, tests and the example.
    /// </summary>
    public Task<int> RunUntilIdleAsync(CancellationToken cancellationToken = default) =>
        new WorkerPipeline(_context, _allOptions, untilIdle: true).RunAsync(_maintenance, cancellationToken);

    /// <inheritdoc />
    public override void Dispose()
    {
        _maintenance.Dispose();
        _context.Registry.Dispose();
        _context.Queue.Dispose();
        base.Dispose();
    }
}
