using Microsoft.Extensions.Logging;
using PgLlm.Observability;

namespace PgLlm.Worker;

/// <summary>
/// The first stage of a lane: claims jobs for the lane's free slots and hands them to its runners. Claims when
/// the lane is worth claiming for (<see cref="EndpointLane.WorthClaiming"/>), else waits for a call to end.
/// When a claim finds nothing, it sleeps: draining until idle, it looks at the queue and stops once nothing is
/// pending or running (waiting out scheduled retries); otherwise it advertises that it sleeps, so enqueuers
/// notify it (<see cref="SleepAdvertisement"/>), and waits for a notification or the poll interval. A database
/// fault never ends it: it backs off and tries again on a new connection.
/// </summary>
internal sealed partial class ClaimLoop
{
    /// <summary>How soon a lane that wants to sleep looks again while an enqueuing transaction is still open.</summary>
    private static readonly TimeSpan UncommittedEnqueuerRecheck = TimeSpan.FromMilliseconds(5);

    private readonly EndpointLane _lane;
    private readonly EndpointLanes _lanes;
    private readonly PipelineContext _context;
    private readonly WriteBackBatcher _writeBacks;
    private readonly EndpointGovernor _governor;
    private readonly DailyBudgets _budgets;
    private readonly bool _untilIdle;
    private readonly SleepAdvertisement _sleep;
    private readonly ILogger _logger;

    public ClaimLoop(EndpointLane lane, EndpointLanes lanes, PipelineContext context, WriteBackBatcher writeBacks, EndpointGovernor governor, DailyBudgets budgets, bool untilIdle)
    {
        _governor = governor;
        _budgets = budgets;
        _lane = lane;
        _lanes = lanes;
        _context = context;
        _writeBacks = writeBacks;
        _untilIdle = untilIdle;
        _logger = context.Logger;
        // One advertisement per lane: each lane sleeps on its own.
        _sleep = new SleepAdvertisement(context.DataSource, lane.Endpoint is null ? context.WorkerId : context.WorkerId + "/" + lane.Endpoint);
    }

    /// <summary>Claims until stopped (or, draining until idle, until nothing is left); then completes the lane's hand-off.</summary>
    public async Task RunAsync(CancellationToken stoppingToken)
    {
        var backoff = new Backoff(_context.Time);
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                try
                {
                    if (!await StepAsync(stoppingToken).ConfigureAwait(false))
                    {
                        break;
                    }

                    backoff.Reset();
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    // Claimed jobs not yet handed on stay 'running' until their lease expires and are rescued.
                    LogDatabaseError(ex, backoff.Next);
                    await backoff.WaitAsync(stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            _lane.Jobs.Writer.TryComplete();
            await WithdrawQuietlyAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One claim, or one wait; false once draining until idle found nothing left to do.</summary>
    private async Task<bool> StepAsync(CancellationToken cancellationToken)
    {
        var poll = _context.Options.PollInterval;
        if (_lanes.NeedsTasks)
        {
            _lanes.Update(await _context.Registry.AllAsync(cancellationToken).ConfigureAwait(false));
        }

        var probe = false;
        if (!_governor.ClaimsFreely(_lane))
        {
            // The endpoint is open or stopped (a read of memory, not of the database): its jobs wait unclaimed,
            // but for one probe at a time across all workers while it is open.
            if (_lane.Busy == 0 && _lane.CanClaim && await _governor.TryProbeAsync(_lane, cancellationToken).ConfigureAwait(false))
            {
                probe = true;
            }
            else
            {
                if (_untilIdle && _lane.Gate.State == GateState.Stopped && _lane.Busy == 0)
                {
                    // Draining until idle, nothing more can be done for a stopped endpoint: its jobs wait for a resume.
                    LogLaneStopped(_lane.Gate.Name);
                    return false;
                }

                await _lane.WaitAsync(Min(poll, _governor.RefreshInterval), _context.Time, cancellationToken).ConfigureAwait(false);
                return true;
            }
        }

        if (!probe && _budgets.Waits(_lane))
        {
            // The endpoint is at its daily budget (a read of memory): its jobs wait, pending, until the cap is
            // raised or cleared or the UTC day ends (the budgets' refresh wakes the lane).
            if (_untilIdle && _lane.Busy == 0)
            {
                LogLaneBudget(_lane.Gate.Name, _budgets.WhyWaits(_lane) ?? "cap reached");
                return false;
            }

            await _lane.WaitAsync(Min(poll, _governor.RefreshInterval), _context.Time, cancellationToken).ConfigureAwait(false);
            return true;
        }

        if (!probe && (!_lane.WorthClaiming || !_lane.CanClaim))
        {
            // Woken by a call that ends (or a notification: the task registry may have changed).
            await _lane.WaitAsync(poll, _context.Time, cancellationToken).ConfigureAwait(false);
            return true;
        }

        var (claimed, asked) = await ClaimAsync(probe, cancellationToken).ConfigureAwait(false);
        if (claimed == 0)
        {
            return await NothingClaimedAsync(cancellationToken).ConfigureAwait(false);
        }

        await ClaimedAsync(drained: claimed < asked, cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>Takes the lane's free slots (up to a batch), claims that many jobs and hands them to the runners.</summary>
    private async Task<(int Claimed, int Asked)> ClaimAsync(bool probe, CancellationToken cancellationToken)
    {
        var asked = 0;
        var most = probe ? 1 : _context.Options.BatchSize;
        // Read before the slots are taken: the re-run jobs this claim may take without using the live reserve.
        var lowLimit = probe ? 1 : _lane.LowPriorityRoom;
        while (asked < most && _lane.Slots.Wait(0, CancellationToken.None))
        {
            asked++;
        }

        // Every slot taken above is either handed on with a job or given back.
        var handed = 0;
        try
        {
            var jobs = await _context.Queue.ClaimAsync(
                _context.WorkerId, asked, _context.Options.Lease, _lane.Filter, _context.Registry.FindAsync, cancellationToken, _budgets.EndpointFor(_lane), lowLimit).ConfigureAwait(false);
            PgLlmMetrics.RecordClaimed(_context.WorkerId, jobs);
            if (jobs.Count == 0 && _budgets.Active)
            {
                // Perhaps a cap was reached: the budgets are read again now rather than at the next refresh.
                _budgets.Nudge();
            }

            var prepared = await _context.Settler.PrepareAsync(jobs).ConfigureAwait(false);
            if (probe)
            {
                if (prepared.Count > 0)
                {
                    // Marked before the hand-off: a waiting runner may start it on this thread.
                    _lane.Gate.StartProbe(prepared[0].Job.Id);
                }
                else
                {
                    await _governor.ProbeUnusedAsync(_lane).ConfigureAwait(false);
                }
            }

            foreach (var work in prepared)
            {
                // Never full (the slots bound it); a waiting runner starts the job on this thread.
                handed++;
                if (!_lane.Jobs.Writer.TryWrite(work))
                {
                    handed--;
                    await _context.Settler.ReleaseAsync(work.Job).ConfigureAwait(false);
                }
            }

            return (jobs.Count, asked);
        }
        finally
        {
            if (asked > handed)
            {
                _lane.Slots.Release(asked - handed);
            }
        }
    }

    /// <summary>
    /// The claim found nothing. Draining until idle: stop when nothing is pending or running, else wait (for
    /// the next retry that is due, at most a poll interval). Otherwise: enqueuers notify only a sleeping
    /// worker, so advertise, then claim once more before sleeping, or look again shortly while an enqueuer
    /// that saw no sleeping worker has yet to commit.
    /// </summary>
    private async Task<bool> NothingClaimedAsync(CancellationToken cancellationToken)
    {
        var wait = _context.Options.PollInterval;
        if (_untilIdle)
        {
            if (_lane.Busy == 0 && _writeBacks.Backlog == 0)
            {
                var (anyRunning, nextDue) = await _context.Queue.PeekAsync(cancellationToken).ConfigureAwait(false);
                if (!anyRunning && nextDue is null)
                {
                    return false;
                }

                if (!anyRunning && _budgets.AnyWaiting)
                {
                    // What is left waits on a daily budget (until it is raised or the UTC day ends): this drain ends.
                    LogDrainBudget();
                    return false;
                }

                wait = Min(nextDue ?? wait, wait);
            }
        }
        else if (!_sleep.Safe)
        {
            if (await _sleep.AdvertiseAsync(cancellationToken).ConfigureAwait(false))
            {
                return true;
            }

            wait = Min(UncommittedEnqueuerRecheck, wait);
        }

        if (!await _lane.WaitAsync(wait, _context.Time, cancellationToken).ConfigureAwait(false))
        {
            // Slept a whole wait: advertise again, which refreshes the advertisement (stale ones are dropped after an hour).
            _sleep.Safe = false;
        }

        return true;
    }

    /// <summary>
    /// The claim took jobs. Woken from sleep and the queue empty again (the claim took fewer than it asked
    /// for): stay advertised and wait for the next notification, rather than withdrawing, claiming again and
    /// advertising again (three round trips per job for a worker that keeps up). Busy again: withdraw, so
    /// enqueuers stop notifying (each NOTIFY serializes their commits).
    /// </summary>
    private async Task ClaimedAsync(bool drained, CancellationToken cancellationToken)
    {
        if (_untilIdle)
        {
            return;
        }

        if (drained && _sleep.SafeAndFresh)
        {
            if (!await _lane.WaitAsync(_context.Options.PollInterval, _context.Time, cancellationToken).ConfigureAwait(false))
            {
                _sleep.Safe = false;
            }

            return;
        }

        await _sleep.WithdrawAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task WithdrawQuietlyAsync()
    {
        try
        {
            await _sleep.WithdrawAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (DatabaseFault.IsConnectionFault(ex) || ex is Npgsql.NpgsqlException)
        {
            // Left behind, the advertisement only makes enqueuers notify; it expires after an hour.
            LogDatabaseError(ex, TimeSpan.Zero);
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Endpoint {Endpoint} is stopped: its jobs wait for `pgllm endpoint resume {Endpoint}`; this drain ends for it")]
    private partial void LogLaneStopped(string endpoint);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Endpoint {Endpoint} waits on its daily budget ({Reason}): its jobs wait for 00:00 UTC or a raised cap; this drain ends for it")]
    private partial void LogLaneBudget(string endpoint, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The jobs left wait on a daily budget (see `pgllm budget list`): this drain ends")]
    private partial void LogDrainBudget();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Database unavailable; retrying in {Delay}")]
    private partial void LogDatabaseError(Exception exception, TimeSpan delay);
}
