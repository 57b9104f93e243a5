using PgLlm.Batches;
using PgLlm.Failures;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// One run of the worker, its stages wired together:
/// <code>
///   per endpoint lane:  ClaimLoop --(hand-off, bounded by the lane's slots)--> CallRunner x concurrency
///   all lanes:          CallRunner --(answers, bounded queue)--> WriteBackBatcher (2 writers)
///   beside them:        NotificationListener (wakes the claim loops), QueueMaintenance (rescue, prune),
///                       EndpointGovernor and DailyBudgets (refresh the endpoints' and budgets' shared state),
///                       BatchLoop (the batch tier: jobs answered through the provider's Batch API)
/// </code>
/// Stopping: the claim loops stop and complete their hand-offs; runners give back the jobs not yet started and
/// finish the calls in flight within the shutdown grace (then the jobs' token is cancelled and those jobs are
/// given back); the last answers are written; then the listener and maintenance stop.
/// </summary>
internal sealed class WorkerPipeline
{
    private readonly PipelineContext _context;
    private readonly PgLlmOptions _options;
    private readonly EndpointLanes _lanes;
    private readonly bool _untilIdle;
    private readonly EndpointGovernor _governor;
    private readonly DailyBudgets _budgets;

    public WorkerPipeline(PipelineContext context, PgLlmOptions options, bool untilIdle)
    {
        _context = context;
        _options = options;
        _lanes = new EndpointLanes(options);
        _untilIdle = untilIdle;
        _governor = new EndpointGovernor(context.DataSource, options, SecretRedactorOf(options), _lanes.All, context.WorkerId, context.Time, context.Logger);
        _budgets = new DailyBudgets(context.DataSource, _lanes.All, options.Governor.RefreshInterval, context.Time, context.Logger);
    }

    /// <summary>A redactor of every configured key: the default endpoint's and the named ones'.</summary>
    internal static SecretRedactor SecretRedactorOf(PgLlmOptions options) =>
        new([options.ApiKey, .. options.Endpoints.Values.Select(e => e.ApiKey)]);

    /// <summary>Runs until stopped (or, draining until idle, until nothing is left); the number of jobs run.</summary>
    public async Task<int> RunAsync(QueueMaintenance? maintenance, CancellationToken stoppingToken)
    {
        // Answers past their call wait for their write-back without a slot: at most twice the concurrency
        // of them (and at least two full batches), after which runners wait and no new calls start.
        var capacity = Math.Max(2 * _lanes.TotalConcurrency, 2 * WriteBackBatcher.MaxBatch);
        using var writeBacks = new WriteBackBatcher(_context.Queue, _context.Settler.WrittenAsync, _lanes.CallsInFlight, capacity, _context.Time);
        if (_untilIdle)
        {
            // Draining until idle, a lane that found nothing looks at the queue again once the last answer is written.
            writeBacks.Idle = WakeAll;
        }

        var runners = _lanes.All.SelectMany(lane => Enumerable.Range(0, lane.Concurrency).Select(_ => new CallRunner(lane, _context, writeBacks, _governor))).ToList();
        // The endpoints' shared state is read before the first claim (a stopped endpoint is not claimed for at all).
        await _governor.StartAsync(stoppingToken).ConfigureAwait(false);
        await _budgets.StartAsync(stoppingToken).ConfigureAwait(false);
        // With the governor, the endpoints' rate limits and 429 pauses are every worker's of the database together.
        var sharing = _governor.SharesLimits ? ShareLimits() : [];
        using var jobsCancellation = new CancellationTokenSource();
        using var besideCancellation = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var beside = new List<Task>();
        if (!_untilIdle)
        {
            var listener = new NotificationListener(_context.DataSource, _context.Registry, WakeAll, _context.Time, _context.Logger, _governor.Nudge, _budgets.Nudge);
            beside.Add(Task.Run(() => listener.RunAsync(besideCancellation.Token), CancellationToken.None));
        }

        beside.Add(Task.Run(() => _governor.RunAsync(besideCancellation.Token), CancellationToken.None));
        beside.Add(Task.Run(() => _budgets.RunAsync(besideCancellation.Token), CancellationToken.None));
        if (maintenance is not null)
        {
            beside.Add(Task.Run(() => maintenance.RunPeriodicallyAsync(besideCancellation.Token), CancellationToken.None));
        }

        var running = runners.Select(r => Task.Run(() => r.RunAsync(stoppingToken, jobsCancellation.Token), CancellationToken.None)).ToArray();
        try
        {
            var claimLoops = _lanes.All.Select(lane => new ClaimLoop(lane, _lanes, _context, writeBacks, _governor, _budgets, _untilIdle));
            var loops = claimLoops.Select(loop => Task.Run(() => loop.RunAsync(stoppingToken), CancellationToken.None)).ToList();
            loops.Add(Task.Run(() => CreateBatchLoop().RunAsync(stoppingToken), CancellationToken.None));
            await Task.WhenAll(loops).ConfigureAwait(false);
        }
        finally
        {
            await FinishCallsAsync(running, jobsCancellation).ConfigureAwait(false);
            // Every runner has handed in its answer; the last write-backs commit before the worker returns.
            await writeBacks.CompleteAndDrainAsync().ConfigureAwait(false);
            await _context.Queue.CloseClaimConnectionAsync().ConfigureAwait(false);
            await besideCancellation.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(beside).ConfigureAwait(false);
            sharing.ForEach(s => s.Dispose());
        }

        return runners.Sum(r => r.Ran);
    }

    /// <summary>
    /// The batch tier's stage, with a queue and settler of its own: its settlements price tokens at batch prices. It
    /// starts batches only for endpoints whose calls the governor lets through (closed, or no governor).
    /// </summary>
    private BatchLoop CreateBatchLoop()
    {
        var batchQueue = new JobQueue(_context.DataSource, _context.Time, batchTier: true);
        var settler = new JobSettler(_context.DataSource, batchQueue, _context.Registry, SecretRedactorOf(_options), _context.Options, _context.Logger);
        return new BatchLoop(_context, _options, _untilIdle, EndpointAllows, batchQueue, settler);
    }

    /// <summary>Whether the governor lets calls through to the endpoint (null: the default one) now.</summary>
    private bool EndpointAllows(string? endpoint) =>
        _lanes.All.FirstOrDefault(l => l.Endpoint == endpoint) is not { } lane || _governor.ClaimsFreely(lane);

    /// <summary>Lets the calls in flight finish within the shutdown grace, then cancels them (their jobs are given back).</summary>
    private async Task FinishCallsAsync(Task[] runners, CancellationTokenSource jobsCancellation)
    {
        var all = Task.WhenAll(runners);
        using var graceCancellation = new CancellationTokenSource();
        var grace = Task.Delay(_context.Options.ShutdownGrace, _context.Time, graceCancellation.Token);
        if (await Task.WhenAny(all, grace).ConfigureAwait(false) != all)
        {
            await jobsCancellation.CancelAsync().ConfigureAwait(false);
        }

        await graceCancellation.CancelAsync().ConfigureAwait(false);
        await all.ConfigureAwait(false);
    }

    /// <summary>Has each endpoint's rate limiter take its permits from the database (see <see cref="SharedEndpointLimits"/>); the handles that end it.</summary>
    private List<IDisposable> ShareLimits()
    {
        var sharing = new List<IDisposable>();
        foreach (var lane in _lanes.All)
        {
            if (_context.Model.RateLimiterOf(lane.Endpoint) is { } limiter)
            {
                sharing.Add(limiter.ShareLimits(new SharedEndpointLimits(_context.DataSource, lane.Gate, _context.Time, _context.Logger)));
            }
        }

        return sharing;
    }

    private void WakeAll()
    {
        foreach (var lane in _lanes.All)
        {
            lane.Wake();
        }
    }
}
