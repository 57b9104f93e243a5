using System.Threading.RateLimiting;

namespace PgLlm.Completions;

/// <summary>
/// A <see cref="RateLimiter"/> whose permits come from a bucket shared by every process that calls the endpoint
/// (<see cref="ISharedRateLimits"/>), taken in slices: when a call waits, one ask takes up to a burst's worth
/// (more when more permits are queued) and the calls of this process are served from it in order, so the
/// bucket sees one round trip per slice, not per call. Only one ask is out at a time; while calls still wait
/// it asks again when the bucket says enough has come in. Permits granted and not handed to a call within
/// <see cref="HoldFor"/> are dropped, so every call starts within that of its permit's grant: with the bucket's
/// <see cref="BurstOf">burst</see> of 2.5 % of the limit, any rolling minute sees at most the limit + 2.5 % +
/// 1/60 (one second's worth) of it. Used for the tokens bucket too, where calls also settle what they used
/// against what they reserved (<see cref="Settle"/>); the difference is carried to the next ask.
/// </summary>
internal sealed class SharedBucketRateLimiter : RateLimiter
{
    /// <summary>How long granted permits not yet handed to a call are kept.</summary>
    internal static readonly TimeSpan HoldFor = TimeSpan.FromSeconds(1);

    /// <summary>The wait before asking again when the bucket could not be reached.</summary>
    private static readonly TimeSpan RetryAfterFault = TimeSpan.FromSeconds(1);

    /// <summary>The shortest wait between two asks while calls wait.</summary>
    private static readonly TimeSpan MinWait = TimeSpan.FromMilliseconds(10);

    private readonly Lock _lock = new();
    private readonly LinkedList<Waiter> _waiters = new();
    private readonly ISharedRateLimits _bucket;
    private readonly SharedRateKind _kind;
    private readonly int _perMinute;
    private readonly TimeProvider _time;
    private long _available;
    private long _queued;
    private long _debt;
    private long _heldUntil;
    private long _successful;
    private long _failed;
    private bool _taking;
    private bool _disposed;

    /// <summary>Creates the limiter.</summary>
    /// <param name="bucket">The shared bucket.</param>
    /// <param name="kind">Which of the endpoint's buckets.</param>
    /// <param name="perMinute">The configured limit per minute.</param>
    /// <param name="time">The clock; the system clock when null.</param>
    public SharedBucketRateLimiter(ISharedRateLimits bucket, SharedRateKind kind, int perMinute, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(bucket);
        ArgumentOutOfRangeException.ThrowIfLessThan(perMinute, 1);
        _bucket = bucket;
        _kind = kind;
        _perMinute = perMinute;
        _time = time ?? TimeProvider.System;
        Burst = BurstOf(perMinute);
    }

    /// <summary>The most permits the shared bucket holds, and the size of a slice.</summary>
    public int Burst { get; }

    /// <inheritdoc />
    public override TimeSpan? IdleDuration => null;

    /// <summary>The burst for a limit: 2.5 % of it, at least 1.</summary>
    public static int BurstOf(int perMinute) => Math.Max(1, perMinute / 40);

    /// <inheritdoc />
    public override RateLimiterStatistics GetStatistics()
    {
        lock (_lock)
        {
            return new RateLimiterStatistics
            {
                CurrentAvailablePermits = _available,
                CurrentQueuedCount = _queued,
                TotalSuccessfulLeases = _successful,
                TotalFailedLeases = _failed,
            };
        }
    }

    /// <summary>
    /// A call used <paramref name="difference"/> permits more than it reserved (negative: fewer). A debt is paid from
    /// the permits at hand, the rest with the next ask; what was not used goes to the next calls.
    /// </summary>
    public void Settle(long difference)
    {
        lock (_lock)
        {
            if (difference > 0)
            {
                var paid = Math.Min(Math.Max(_available, 0), difference);
                _available -= paid;
                _debt += difference - paid;
            }
            else if (difference < 0 && !_disposed)
            {
                _available -= difference;
                _heldUntil = _time.GetTimestamp() + (long)(HoldFor.TotalSeconds * _time.TimestampFrequency);
                Serve();
            }
        }
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            DropExpired();
            if (_waiters.Count == 0 && _available >= permitCount)
            {
                _available -= permitCount;
                _successful++;
                return Lease.Acquired;
            }

            _failed++;
            return Lease.Refused;
        }
    }

    /// <inheritdoc />
    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
    {
        Waiter waiter;
        bool start;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            DropExpired();
            if (_waiters.Count == 0 && _available >= permitCount)
            {
                _available -= permitCount;
                _successful++;
                return new ValueTask<RateLimitLease>(Lease.Acquired);
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<RateLimitLease>(cancellationToken);
            }

            waiter = new Waiter(permitCount);
            waiter.Node = _waiters.AddLast(waiter);
            _queued += permitCount;
            start = !_taking;
            _taking = true;
        }

        if (cancellationToken.CanBeCanceled)
        {
            waiter.Registration = cancellationToken.Register(static state =>
            {
                var (limiter, cancelled, token) = ((SharedBucketRateLimiter, Waiter, CancellationToken))state!;
                limiter.Cancel(cancelled, token);
            }, (this, waiter, cancellationToken));
        }

        if (start)
        {
            _ = Task.Run(TakeLoopAsync, CancellationToken.None);
        }

        return new ValueTask<RateLimitLease>(waiter.Completion.Task);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            lock (_lock)
            {
                _disposed = true;
                foreach (var waiter in _waiters)
                {
                    waiter.Completion.TrySetException(new ObjectDisposedException(nameof(SharedBucketRateLimiter)));
                }

                _waiters.Clear();
                _queued = 0;
            }
        }

        base.Dispose(disposing);
    }

    /// <summary>Asks the bucket for permits while calls wait; one loop at a time.</summary>
    private async Task TakeLoopAsync()
    {
        while (true)
        {
            int wanted;
            long debt;
            lock (_lock)
            {
                if (_waiters.Count == 0 || _disposed)
                {
                    _taking = false;
                    return;
                }

                wanted = (int)Math.Min(int.MaxValue, Math.Max(Burst, _queued - _available));
                debt = _debt;
                _debt = 0;
            }

            var asked = _time.GetTimestamp();
            SharedRateGrant grant;
            try
            {
                grant = await _bucket.TakeAsync(_kind, wanted, debt, _perMinute, Burst, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Whatever kept the bucket out of reach (the database restarting), the calls wait and the loop asks again.
            catch (Exception)
#pragma warning restore CA1031
            {
                lock (_lock)
                {
                    _debt += debt;
                }

                await Task.Delay(RetryAfterFault, _time).ConfigureAwait(false);
                continue;
            }

            if (Granted(grant, asked) is not { } wait)
            {
                return;
            }

            await Task.Delay(wait, _time).ConfigureAwait(false);
        }
    }

    /// <summary>Hands the grant to the waiting calls; the wait before the next ask, or null when no call waits (the loop ends).</summary>
    private TimeSpan? Granted(SharedRateGrant grant, long asked)
    {
        lock (_lock)
        {
            _available += grant.Granted;
            Serve();
            if (_waiters.Count == 0 || _disposed)
            {
                _heldUntil = asked + (long)(HoldFor.TotalSeconds * _time.TimestampFrequency);
                _taking = false;
                return null;
            }

            return grant.Wait < MinWait ? MinWait : grant.Wait;
        }
    }

    /// <summary>Completes the waiting calls in order while the permits at hand cover the first; under the lock.</summary>
    private void Serve()
    {
        while (_waiters.First is { } first && _available >= first.Value.Permits)
        {
            var waiter = first.Value;
            _waiters.RemoveFirst();
            _available -= waiter.Permits;
            _queued -= waiter.Permits;
            _successful++;
            waiter.Registration.Unregister();
            waiter.Completion.TrySetResult(Lease.Acquired);
        }
    }

    /// <summary>Drops the permits held longer than <see cref="HoldFor"/> with no call to take them; under the lock.</summary>
    private void DropExpired()
    {
        if (_waiters.Count == 0 && _available > 0 && _time.GetTimestamp() > _heldUntil)
        {
            _available = 0;
        }
    }

    private void Cancel(Waiter waiter, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (waiter.Node?.List is null)
            {
                return;
            }

            _waiters.Remove(waiter.Node);
            _queued -= waiter.Permits;
            // Permits gathered for the cancelled call go to the next.
            Serve();
        }

        waiter.Completion.TrySetCanceled(cancellationToken);
    }

    /// <summary>A call waiting for permits.</summary>
    private sealed class Waiter(int permits)
    {
        public int Permits { get; } = permits;

        public TaskCompletionSource<RateLimitLease> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LinkedListNode<Waiter>? Node { get; set; }

        public CancellationTokenRegistration Registration { get; set; }
    }

    /// <summary>A lease with nothing to give back: shared permits count as spent when granted.</summary>
    private sealed class Lease(bool acquired) : RateLimitLease
    {
        public static readonly Lease Acquired = new(true);

        public static readonly Lease Refused = new(false);

        public override bool IsAcquired { get; } = acquired;

        public override IEnumerable<string> MetadataNames => [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = null;
            return false;
        }
    }
}
