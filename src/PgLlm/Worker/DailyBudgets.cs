using System.Collections.Frozen;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Observability;

namespace PgLlm.Worker;

/// <summary>
/// The daily budgets' part in one worker (<c>llm.budget</c>, migration 0007): a cached view of which budgets exist
/// and which wait at their cap, read every <see cref="PgLlmGovernorOptions.RefreshInterval"/> and at once on
/// <c>NOTIFY pgllm_budgets</c> (a budget set, raised or cleared). With no budget, claims go to <c>llm.claim</c>
/// exactly as before; while any exists, each claim goes to <c>llm.claim_budgeted</c> in the same round trip
/// (<see cref="EndpointFor"/>), which admits, limits and reserves under the budgets' row locks, so the cached
/// view only spares claims that would find nothing (<see cref="Waits"/>): nothing here queries the database on a
/// claim's path. A budget reaching its cap is logged once per worker; when one is raised, cleared or a new UTC
/// day starts, the lanes claim again at once.
/// </summary>
internal sealed partial class DailyBudgets
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly IReadOnlyList<EndpointLane> _lanes;
    private readonly RefreshLoop _refresh;
    private readonly ILogger _logger;
    private volatile View _view = View.None;

    public DailyBudgets(NpgsqlDataSource dataSource, IReadOnlyList<EndpointLane> lanes, TimeSpan refreshInterval, TimeProvider time, ILogger logger)
    {
        _dataSource = dataSource;
        _lanes = lanes;
        _logger = logger;
        _refresh = new RefreshLoop(RefreshAsync, refreshInterval, time, LogRefreshFailed);
    }

    /// <summary>Whether any budget exists (as last read): claims then reserve against the budgets.</summary>
    public bool Active => _view.Active;

    /// <summary>Whether some budget waits at its cap (as last read).</summary>
    public bool AnyWaiting => _view.Waiting.Count > 0;

    /// <summary>The endpoint to pass to <c>llm.claim_budgeted</c> for the lane; null (a plain claim) when no budget exists.</summary>
    public string? EndpointFor(EndpointLane lane) => _view.Active ? lane.Gate.Name : null;

    /// <summary>Whether the lane's endpoint waits at its cap (a read of memory): its claims would find nothing.</summary>
    public bool Waits(EndpointLane lane)
    {
        var view = _view;
        return view.Waiting.Count > 0 && view.Waiting.Contains("endpoint " + lane.Gate.Name);
    }

    /// <summary>Why the lane's endpoint waits, for the log.</summary>
    public string? WhyWaits(EndpointLane lane) => _view.Reasons.GetValueOrDefault("endpoint " + lane.Gate.Name);

    /// <summary>Has the budgets read at once (one was set or cleared, or a claim found a cap).</summary>
    public void Nudge() => _refresh.Nudge();

    /// <summary>Reads the budgets before the first claim; a failure leaves the view empty (the refresh loop tries again).</summary>
    public Task StartAsync(CancellationToken cancellationToken) => _refresh.FirstAsync(cancellationToken);

    /// <summary>Reads the budgets every refresh interval, or at once when nudged, until stopped (a failed read keeps the
    /// view's last state: the budgeted claim checks the caps itself anyway).</summary>
    public Task RunAsync(CancellationToken cancellationToken) => _refresh.RunAsync(cancellationToken);

    /// <summary>Reads <c>llm.budget_state()</c> (which settles finished attempts first) and logs what changed.</summary>
    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        var budgets = await BudgetStatus.ReadAllAsync(_dataSource, cancellationToken).ConfigureAwait(false);
        var next = new View(
            budgets.Count > 0,
            budgets.Where(b => b.Waiting).ToFrozenDictionary(b => b.Scope + " " + b.Name, b => b.Reason ?? "cap reached", StringComparer.Ordinal));
        var before = _view;
        _view = next;
        PgLlmMetrics.RecordBudgets([.. budgets.Select(b => (b.Scope + " " + b.Name, b.Waiting))]);
        var resumed = false;
        foreach (var (key, reason) in next.Reasons)
        {
            if (!before.Waiting.Contains(key))
            {
                LogCapReached(key, reason);
            }
        }

        foreach (var key in before.Waiting)
        {
            if (!next.Waiting.Contains(key))
            {
                LogResumed(key);
                resumed = true;
            }
        }

        if (resumed || before.Active != next.Active)
        {
            foreach (var lane in _lanes)
            {
                lane.Wake();
            }
        }
    }

    /// <summary>One read of the budgets: whether any exists, and the waiting ones (<c>scope name</c>) with why.</summary>
    private sealed record View(bool Active, FrozenDictionary<string, string> Reasons)
    {
        public static readonly View None = new(false, FrozenDictionary<string, string>.Empty);

        public FrozenSet<string> Waiting { get; } = Reasons.Keys.ToFrozenSet(StringComparer.Ordinal);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Daily budget of {Budget} reached: {Reason}. Its jobs wait (pending, no attempt spent) until 00:00 UTC or until the cap is raised (`pgllm budget set`) or cleared")]
    private partial void LogCapReached(string budget, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Daily budget of {Budget} has room again (raised, cleared or a new UTC day): its jobs are claimed again")]
    private partial void LogResumed(string budget);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not read the daily budgets")]
    private partial void LogRefreshFailed(Exception exception);
}
