using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Observability;
using PgLlm.Worker;

namespace PgLlm.Hosting;

/// <summary>
/// Reports the queue depth and whether this process's worker is alive: Unhealthy when the database
/// cannot be reached, the worker stopped, or it has not asked the queue for work for longer than
/// <see cref="PgLlmMonitoringOptions.WorkerStallAfter"/>; Degraded while the worker has not started or
/// when pending jobs exceed <see cref="PgLlmMonitoringOptions.DegradedQueueDepth"/>. An endpoint the governor stopped
/// (401/403, out of quota) makes it Unhealthy ("endpoint default stopped: unauthorized: ..."), one whose circuit
/// breaker is open Degraded.
/// Registered by <see cref="PgLlmServiceCollectionExtensions.AddPgLlm"/> under the name <c>pgllm</c>.
/// </summary>
public sealed class PgLlmHealthCheck : IHealthCheck
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly PgLlmWorker? _worker;
    private readonly PgLlmOptions _options;

    /// <summary>Creates the check.</summary>
    /// <param name="dataSource">The database holding the queue.</param>
    /// <param name="options">Thresholds.</param>
    /// <param name="worker">The worker of this process; null when it runs none (the check then reports the queue only).</param>
    public PgLlmHealthCheck(NpgsqlDataSource dataSource, IOptions<PgLlmOptions> options, PgLlmWorker? worker = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(options);
        _dataSource = dataSource;
        _worker = worker;
        _options = options.Value;
    }

    /// <summary>How long a worker may go without asking for work before it counts as stalled.</summary>
    public TimeSpan StallAfter => _options.Monitoring.WorkerStallAfter
        ?? Max(TimeSpan.FromMinutes(1), Max(_options.Worker.PollInterval * 3, _options.Worker.ModelTimeout + TimeSpan.FromMinutes(1)));

    /// <inheritdoc />
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        QueueDepth depth;
        IReadOnlyList<EndpointStatus> endpoints;
        IReadOnlyList<BudgetStatus> budgets;
        try
        {
            depth = await PgLlmStatus.ReadDepthAsync(_dataSource, cancellationToken).ConfigureAwait(false);
            endpoints = await EndpointStatus.ReadAllAsync(_dataSource, cancellationToken).ConfigureAwait(false);
            budgets = await BudgetStatus.ReadAllAsync(_dataSource, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException)
        {
            return HealthCheckResult.Unhealthy("cannot read the queue: " + ex.Message, ex);
        }

        PgLlmMetrics.RecordQueueDepth(depth);
        var data = new Dictionary<string, object>
        {
            ["pending"] = depth.Pending,
            ["running"] = depth.Running,
            ["failed"] = depth.Failed,
        };
        var summary = string.Create(CultureInfo.InvariantCulture, $"{depth.Pending} pending, {depth.Running} running, {depth.Failed} failed");
        if (WorkerVerdict(data, summary) is { } workerVerdict)
        {
            return workerVerdict;
        }

        if (EndpointsVerdict(endpoints, data, summary) is { } endpointVerdict)
        {
            return endpointVerdict;
        }

        // A daily budget at its cap is no fault: still healthy, with what waits on it said (and no stall: a worker
        // whose only endpoint waits on its budget claims nothing).
        var waiting = BudgetsWaiting(budgets, data);
        if (waiting is not null)
        {
            summary = waiting + "; " + summary;
        }

        // After the endpoints: a worker whose only endpoint is stopped or open claims nothing, and says why there.
        if (waiting is null && _worker is not null && PgLlmMetrics.LastClaimAt(_worker.WorkerId) is { } last && DateTimeOffset.UtcNow - last > StallAfter)
        {
            return HealthCheckResult.Unhealthy(
                string.Create(CultureInfo.InvariantCulture, $"the worker has not asked for work for {(DateTimeOffset.UtcNow - last).TotalSeconds:0} s; {summary}"), data: data);
        }

        if (_options.Monitoring.DegradedQueueDepth is { } limit && depth.Pending > limit)
        {
            return HealthCheckResult.Degraded(string.Create(CultureInfo.InvariantCulture, $"more than {limit} jobs pending; {summary}"), data: data);
        }

        return HealthCheckResult.Healthy(summary, data);
    }

    /// <summary>The hosted worker's own state (not started, stopped), with its id and last claim in the data; null when it runs or there is none.</summary>
    private HealthCheckResult? WorkerVerdict(Dictionary<string, object> data, string summary)
    {
        if (_worker is null)
        {
            return null;
        }

        data["worker"] = _worker.WorkerId;
        if (PgLlmMetrics.LastClaimAt(_worker.WorkerId) is { } at)
        {
            data["lastClaimAt"] = at;
        }

        if (_worker.ExecuteTask is null)
        {
            return HealthCheckResult.Degraded($"the worker has not started; {summary}", data: data);
        }

        return _worker.ExecuteTask.IsCompleted
            ? HealthCheckResult.Unhealthy($"the worker stopped; {summary}", _worker.ExecuteTask.Exception, data)
            : null;
    }

    /// <summary>
    /// The endpoints this application configures (a row left by a removed endpoint says nothing), added to
    /// <paramref name="data"/>: Unhealthy when one is stopped, Degraded when one's breaker is open, else null.
    /// </summary>
    private HealthCheckResult? EndpointsVerdict(IReadOnlyList<EndpointStatus> endpoints, Dictionary<string, object> data, string summary)
    {
        var mine = endpoints.Where(e => e.Endpoint == EndpointStatus.DefaultEndpoint || _options.Endpoints.ContainsKey(e.Endpoint)).ToList();
        foreach (var endpoint in mine)
        {
            data["endpoint." + endpoint.Endpoint] = endpoint.State;
        }

        if (mine.FirstOrDefault(e => e.State == "stopped") is { } stopped)
        {
            return HealthCheckResult.Unhealthy($"endpoint {stopped.Endpoint} stopped: {stopped.Reason}; {summary}", data: data);
        }

        return mine.FirstOrDefault(e => e.State == "open") is { } open
            ? HealthCheckResult.Degraded($"endpoint {open.Endpoint} open (circuit breaker): {open.Reason}; {summary}", data: data)
            : null;
    }

    /// <summary>
    /// The daily budgets waiting at their cap, added to <paramref name="data"/> (<c>budget.task.NAME</c>: why); a
    /// line naming them (<c>budget task T waiting: daily cost cap 5.00 reached, ...</c>), or null when none waits.
    /// </summary>
    private static string? BudgetsWaiting(IReadOnlyList<BudgetStatus> budgets, Dictionary<string, object> data)
    {
        var waiting = budgets.Where(b => b.Waiting).ToList();
        foreach (var budget in waiting)
        {
            data["budget." + budget.Scope + "." + budget.Name] = budget.Describe();
        }

        return waiting.Count == 0 ? null : string.Join("; ", waiting.Select(b => $"budget {b.Scope} {b.Name} {b.Describe()}"));
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
