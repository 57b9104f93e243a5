using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Failures;
using PgLlm.Observability;

namespace PgLlm.Worker;

/// <summary>An endpoint's state in the governor: calls flow, the circuit breaker is open, or it is stopped (auth, quota).</summary>
internal enum GateState
{
    Closed = 0,
    Open = 1,
    Stopped = 2,
}

/// <summary>
/// This worker's cached view of one endpoint's shared state (<c>llm.endpoint_state</c>), read by its lane's claim
/// loop and call runners without a query: refreshed by <see cref="EndpointGovernor"/> every
/// <see cref="PgLlmGovernorOptions.RefreshInterval"/>, and at once by this worker's own reports.
/// </summary>
internal sealed class EndpointGate(string name, string configHash)
{
    private int _state;
    private long _probeJob = -1;
    private long _pausedUntilTicks;
    private volatile bool _failuresCounted;

    /// <summary>The endpoint's name in <c>llm.endpoint_state</c>.</summary>
    public string Name { get; } = name;

    /// <summary>A hash of the endpoint's base URL, key and model: a change of any of them ends a stop.</summary>
    public string ConfigHash { get; } = configHash;

    public GateState State => (GateState)Volatile.Read(ref _state);

    public bool IsClosed => Volatile.Read(ref _state) == (int)GateState.Closed;

    public string? Reason { get; private set; }

    /// <summary>When the open endpoint's next probe is due, as last read.</summary>
    public DateTimeOffset? NextProbeAt { get; set; }

    /// <summary>Whether failures are counted toward the breaker, so a success has something to reset.</summary>
    public bool FailuresCounted
    {
        get => _failuresCounted;
        set => _failuresCounted = value;
    }

    /// <summary>The job this worker probes the open endpoint with; -1 when none.</summary>
    public long ProbeJob => Interlocked.Read(ref _probeJob);

    public void StartProbe(long jobId) => Interlocked.Exchange(ref _probeJob, jobId);

    /// <summary>Whether <paramref name="jobId"/> was this worker's probe (which it no longer is).</summary>
    public bool EndProbe(long jobId) => Interlocked.CompareExchange(ref _probeJob, -1, jobId) == jobId;

    /// <summary>Until when every worker's calls of the endpoint wait (a 429 that one of them met); null when never paused.</summary>
    public DateTimeOffset? PausedUntil
    {
        get
        {
            var ticks = Interlocked.Read(ref _pausedUntilTicks);
            return ticks == 0 ? null : new DateTimeOffset(ticks, TimeSpan.Zero);
        }
    }

    /// <summary>Pauses the endpoint's calls until <paramref name="until"/>, unless a longer pause holds.</summary>
    public void PauseUntil(DateTimeOffset until)
    {
        var ticks = until.UtcTicks;
        long current;
        do
        {
            current = Interlocked.Read(ref _pausedUntilTicks);
        }
        while (ticks > current && Interlocked.CompareExchange(ref _pausedUntilTicks, ticks, current) != current);
    }

    /// <summary>Sets the state; the previous one.</summary>
    public GateState Set(GateState state, string? reason)
    {
        Reason = reason;
        return (GateState)Interlocked.Exchange(ref _state, (int)state);
    }
}

/// <summary>
/// The endpoint governor's part in one worker: keeps each lane's <see cref="EndpointGate"/> in step with the
/// shared state in <c>llm.endpoint_state</c>, which every worker of the database reads and writes, and reports
/// what calls meet. A 401/403 or an out-of-quota 429 stops the endpoint (no worker claims its jobs until it is
/// resumed or its configuration changes); sustained transport failures or 5xx open its breaker (its jobs wait;
/// one worker at a time probes it with one job, with exponential backoff; a success closes it). A job whose call
/// failed because the endpoint is stopped or open is given back without spending its attempt. Nothing here
/// queries the database on a claim's path: the gates are read from memory.
/// </summary>
internal sealed partial class EndpointGovernor
{
    /// <summary>The channel the governor's functions notify when an endpoint stops, opens or closes.</summary>
    public const string EndpointsChannel = "pgllm_endpoints";

    private readonly NpgsqlDataSource _dataSource;
    private readonly PgLlmGovernorOptions _options;
    private readonly TimeSpan _probeLease;
    private readonly SecretRedactor _redactor;
    private readonly IReadOnlyList<EndpointLane> _lanes;
    private readonly string _workerId;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly RefreshLoop _refresh;
    private bool _configured;
    private volatile bool _enabled;
    private volatile bool _limitsShared = true;

    public EndpointGovernor(NpgsqlDataSource dataSource, PgLlmOptions options, SecretRedactor redactor, IReadOnlyList<EndpointLane> lanes, string workerId, TimeProvider time, ILogger logger)
    {
        _dataSource = dataSource;
        _options = options.Governor;
        _probeLease = options.Worker.ModelTimeout + TimeSpan.FromSeconds(30);
        _redactor = redactor;
        _lanes = lanes;
        _workerId = workerId;
        _time = time;
        _logger = logger;
        _enabled = _options.Enabled;
        Validate(_options);
        // Off by configuration, or turned off by a read that finds the queue predates the governor: no more reads.
        _refresh = new RefreshLoop(RefreshAsync, _options.RefreshInterval, time, LogRefreshFailed, () => _enabled);
    }

    /// <summary>Throws when a governor setting cannot work.</summary>
    public static void Validate(PgLlmGovernorOptions options)
    {
        if (options.FailureThreshold < 1)
        {
            throw new ArgumentException("PgLlm:Governor:FailureThreshold must be at least 1.", nameof(options));
        }

        if (options.RefreshInterval <= TimeSpan.Zero || options.FailureWindow <= TimeSpan.Zero
            || options.ProbeInterval <= TimeSpan.Zero || options.MaxProbeInterval < options.ProbeInterval)
        {
            throw new ArgumentException(
                "PgLlm:Governor:RefreshInterval, FailureWindow and ProbeInterval must be positive, and MaxProbeInterval at least ProbeInterval.", nameof(options));
        }
    }

    /// <summary>How often the shared state is read.</summary>
    public TimeSpan RefreshInterval => _options.RefreshInterval;

    /// <summary>Whether the governor acts (it is off by configuration, or when the queue predates it).</summary>
    public bool Enabled => _enabled;

    /// <summary>Whether the endpoints' rate limits and 429 pauses are shared through the database (the governor acts and the queue has them).</summary>
    public bool SharesLimits => _enabled && _limitsShared;

    /// <summary>A hash of what identifies an endpoint's account: base URL, key, model (the key never leaves the hash).</summary>
    public static string ConfigHash(string? baseUrl, string? apiKey, string? model) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{baseUrl}\n{apiKey}\n{model}")));

    /// <summary>The gate's name for a lane's endpoint: its name, or <c>default</c>.</summary>
    public static string NameOf(string? endpoint) => endpoint ?? EndpointStatus.DefaultEndpoint;

    /// <summary>Registers this worker's configuration of each endpoint and reads their states; before the first claim
    /// (a failure is logged: the claims meet the same fault and back off, and the refresh loop tries again).</summary>
    public Task StartAsync(CancellationToken cancellationToken) => _refresh.FirstAsync(cancellationToken);

    /// <summary>Reads the shared states every <see cref="PgLlmGovernorOptions.RefreshInterval"/>, or at once when nudged,
    /// until stopped; a failed read leaves the gates in their last state.</summary>
    public Task RunAsync(CancellationToken cancellationToken) => _refresh.RunAsync(cancellationToken);

    /// <summary>Has the state read at once (an endpoint's state changed: another worker stopped, opened or closed it).</summary>
    public void Nudge() => _refresh.Nudge();

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (!_configured)
            {
                foreach (var lane in _lanes)
                {
                    await using var configure = _dataSource.CreateCommand("SELECT llm.endpoint_configure($1, $2)");
                    configure.Parameters.Add(new NpgsqlParameter { Value = lane.Gate.Name });
                    configure.Parameters.Add(new NpgsqlParameter { Value = lane.Gate.ConfigHash });
                    await configure.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
                }

                _configured = true;
            }

            await using var command = _dataSource.CreateCommand(_limitsShared
                ? "SELECT endpoint, state, reason, next_probe_at, failures, extract(epoch FROM paused_until - clock_timestamp())::float8 FROM llm.endpoint_state WHERE endpoint = ANY($1)"
                : "SELECT endpoint, state, reason, next_probe_at, failures, NULL::float8 FROM llm.endpoint_state WHERE endpoint = ANY($1)");
            command.Parameters.Add(new NpgsqlParameter { Value = _lanes.Select(l => l.Gate.Name).ToArray() });
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                ApplyRow(reader);
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedColumn && _limitsShared)
        {
            // The queue predates shared rate limits (migration 0006): each worker keeps its own, as before.
            _limitsShared = false;
            LogLimitsNotShared(ex.MessageText);
            await RefreshAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.UndefinedFunction)
        {
            // The queue was migrated by an older PgLlm: every failure is the job's, as before.
            _enabled = false;
            LogGovernorOff(ex.MessageText);
        }
    }

    /// <summary>Brings the gate of the endpoint in <paramref name="reader"/>'s row in step with it.</summary>
    private void ApplyRow(NpgsqlDataReader reader)
    {
        var name = reader.GetString(0);
        foreach (var lane in _lanes)
        {
            if (lane.Gate.Name != name)
            {
                continue;
            }

            lane.Gate.NextProbeAt = reader.IsDBNull(3) ? null : reader.GetFieldValue<DateTimeOffset>(3);
            if (reader.GetInt32(4) > 0)
            {
                lane.Gate.FailuresCounted = true;
            }

            if (!reader.IsDBNull(5) && reader.GetDouble(5) > 0)
            {
                // A worker met a 429: this one's calls wait as long (from now, whatever the clocks say).
                lane.Gate.PauseUntil(_time.GetUtcNow() + TimeSpan.FromSeconds(reader.GetDouble(5)));
            }

            Apply(lane, reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2));
        }
    }

    /// <summary>Whether a runner may call the model for <paramref name="jobId"/>: the endpoint is closed, or the job is this worker's probe.</summary>
    public bool Allows(EndpointLane lane, long jobId) => !_enabled || lane.Gate.IsClosed || lane.Gate.ProbeJob == jobId;

    /// <summary>Whether the claim loop may claim for the lane now (with a probe lease held when it is open, see <see cref="TryProbeAsync"/>).</summary>
    public bool ClaimsFreely(EndpointLane lane) => !_enabled || lane.Gate.IsClosed;

    /// <summary>Takes the open endpoint's probe lease when the probe is due and no worker holds it.</summary>
    public async Task<bool> TryProbeAsync(EndpointLane lane, CancellationToken cancellationToken)
    {
        var gate = lane.Gate;
        if (gate.State != GateState.Open || gate.ProbeJob != -1 || (gate.NextProbeAt is { } due && due > _time.GetUtcNow()))
        {
            return false;
        }

        await using var command = _dataSource.CreateCommand("SELECT llm.endpoint_probe($1, $2, $3)");
        command.Parameters.Add(new NpgsqlParameter { Value = gate.Name });
        command.Parameters.Add(new NpgsqlParameter { Value = _workerId });
        command.Parameters.Add(new NpgsqlParameter { Value = _probeLease.TotalSeconds });
        var leased = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true;
        if (leased)
        {
            LogProbing(gate.Name);
        }
        else
        {
            // Another worker probes, or the probe is not due: look again after the next refresh.
            gate.NextProbeAt = _time.GetUtcNow() + _options.RefreshInterval;
        }

        return leased;
    }

    /// <summary>The probe lease was taken but no job came of it: given back for the next worker.</summary>
    public async Task ProbeUnusedAsync(EndpointLane lane)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.endpoint_probe_unused($1, $2)");
        command.Parameters.Add(new NpgsqlParameter { Value = lane.Gate.Name });
        command.Parameters.Add(new NpgsqlParameter { Value = _workerId });
        await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>A call succeeded. Costs nothing unless failures were counted or the call was a probe: then the breaker closes.</summary>
    public ValueTask SucceededAsync(EndpointLane lane, long jobId)
    {
        var gate = lane.Gate;
        var probe = gate.ProbeJob == jobId && gate.EndProbe(jobId);
        if (!_enabled || (!probe && !gate.FailuresCounted && gate.State != GateState.Open))
        {
            return ValueTask.CompletedTask;
        }

        return new ValueTask(ReportSuccessAsync(lane));
    }

    private async Task ReportSuccessAsync(EndpointLane lane)
    {
        lane.Gate.FailuresCounted = false;
        try
        {
            await using var command = _dataSource.CreateCommand("SELECT llm.endpoint_success($1)");
            command.Parameters.Add(new NpgsqlParameter { Value = lane.Gate.Name });
            var state = (string?)await command.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false);
            Apply(lane, state ?? "closed", state is null or "closed" ? "a call succeeded" : lane.Gate.Reason);
        }
#pragma warning disable CA1031 // A report that cannot be made must not end the runner: the job is settled as if it failed on its own.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            lane.Gate.FailuresCounted = true;
            LogRefreshFailed(ex);
        }
    }

    /// <summary>
    /// A call failed. When the failure is the endpoint's (auth, quota, outage), it is reported to the shared
    /// state; true when the job is to be given back without spending its attempt (the endpoint is now stopped
    /// or open), false when the failure is the job's attempt, as before.
    /// </summary>
    public async Task<bool> FailedAsync(EndpointLane lane, long jobId, Exception exception)
    {
        var gate = lane.Gate;
        var probe = gate.EndProbe(jobId);
        if (!_enabled)
        {
            return false;
        }

        var fault = FailureClassifier.EndpointFaultOf(exception);
        if (fault == EndpointFault.None)
        {
            if (probe)
            {
                // The endpoint answered (the failure is the job's own): it is up again.
                await ReportSuccessAsync(lane).ConfigureAwait(false);
            }

            return false;
        }

        var reason = _redactor.Redact(FailureClassifier.EndpointReason(fault, exception));
        string state;
        try
        {
            await using var command = _dataSource.CreateCommand("SELECT llm.endpoint_failure($1, $2, $3, $4, $5, $6, $7, $8, $9)");
            command.Parameters.Add(new NpgsqlParameter { Value = gate.Name });
            command.Parameters.Add(new NpgsqlParameter { Value = fault == EndpointFault.Outage ? "outage" : "stop" });
            command.Parameters.Add(new NpgsqlParameter { Value = reason });
            command.Parameters.Add(new NpgsqlParameter { Value = gate.ConfigHash });
            command.Parameters.Add(new NpgsqlParameter { Value = _workerId });
            command.Parameters.Add(new NpgsqlParameter { Value = _options.FailureThreshold });
            command.Parameters.Add(new NpgsqlParameter { Value = _options.FailureWindow.TotalSeconds });
            command.Parameters.Add(new NpgsqlParameter { Value = _options.ProbeInterval.TotalSeconds });
            command.Parameters.Add(new NpgsqlParameter { Value = _options.MaxProbeInterval.TotalSeconds });
            state = (string?)await command.ExecuteScalarAsync(CancellationToken.None).ConfigureAwait(false) ?? "closed";
        }
#pragma warning disable CA1031 // A report that cannot be made must not end the runner: the job is settled as if it failed on its own.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            // Not recorded: the failure is the job's attempt, as without the governor (never a release that
            // could repeat forever). If the database is down, the settlement fails too and the lease expires.
            LogRefreshFailed(ex);
            return false;
        }

        gate.FailuresCounted = true;
        if (state == "open" && gate.State != GateState.Open)
        {
            gate.NextProbeAt = _time.GetUtcNow() + _options.ProbeInterval;
        }
        else if (state == "open" && probe)
        {
            // A failed probe: the next is due later (the refresh reads when).
            gate.NextProbeAt = _time.GetUtcNow() + _options.RefreshInterval;
        }

        Apply(lane, state, state == "closed" ? gate.Reason : reason);
        return state != "closed";
    }

    private void Apply(EndpointLane lane, string state, string? reason)
    {
        var next = state switch
        {
            "open" => GateState.Open,
            "stopped" => GateState.Stopped,
            _ => GateState.Closed,
        };
        var gate = lane.Gate;
        var before = gate.Set(next, reason);
        PgLlmMetrics.RecordEndpointState(gate.Name, (int)next);
        if (before == next)
        {
            return;
        }

        switch (next)
        {
            case GateState.Stopped:
                LogStopped(gate.Name, reason ?? "unknown");
                break;
            case GateState.Open:
                LogOpened(gate.Name, reason ?? "unknown");
                break;
            default:
                LogClosed(gate.Name, before.ToString().ToLower(CultureInfo.InvariantCulture), reason ?? "resumed");
                // The lane may have waited: it claims again at once.
                lane.Wake();
                break;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Endpoint {Endpoint} stopped: {Reason}. Its jobs wait (no attempt spent) until `pgllm endpoint resume {Endpoint}` or a changed configuration")]
    private partial void LogStopped(string endpoint, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Endpoint {Endpoint} open (circuit breaker): {Reason}. Its jobs wait (no attempt spent); probing it with one job at a time")]
    private partial void LogOpened(string endpoint, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Endpoint {Endpoint} closed again (was {Previous}): {Reason}")]
    private partial void LogClosed(string endpoint, string previous, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Probing endpoint {Endpoint} with one job")]
    private partial void LogProbing(string endpoint);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not read or report the endpoints' shared state")]
    private partial void LogRefreshFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Rate limits are not shared between workers: the queue predates them ({Detail}); run the migrations")]
    private partial void LogLimitsNotShared(string detail);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The endpoint governor is off: the queue predates it ({Detail}); run the migrations")]
    private partial void LogGovernorOff(string detail);
}
