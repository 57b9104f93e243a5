using System.Threading.RateLimiting;
using PgLlm.Completions;

namespace PgLlm.Tests.Completions;

/// <summary>
/// The limiter that hands out a shared budget's slices to one process's calls: one ask per slice, calls served in
/// order, permits not handed out within a second dropped, debts carried to the next ask. The budget here is an
/// in-memory one (the PostgreSQL one is <c>SharedRateLimitSqlTests</c>'s).
/// </summary>
public sealed class SharedBucketRateLimiterTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Waiting_calls_are_served_from_slices_with_one_ask_per_slice()
    {
        var budget = new Budget(available: 1000);
        using var limiter = new SharedBucketRateLimiter(budget, SharedRateKind.Requests, 600);
        Assert.Equal(15, limiter.Burst);
        using var timeout = new CancellationTokenSource(Bound);

        var leases = await Task.WhenAll(Enumerable.Range(0, 40).Select(_ => limiter.AcquireAsync(1, timeout.Token).AsTask()));

        Assert.All(leases, lease => Assert.True(lease.IsAcquired));
        // 40 calls, slices of at least 15: a handful of asks, not 40.
        Assert.InRange(budget.Asks, 1, 4);
        Assert.Equal(budget.Granted - 40, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task Permits_not_handed_out_within_a_second_are_dropped_and_a_debt_is_paid_from_the_next_ask()
    {
        var budget = new Budget(available: 1000);
        var time = new ManualTime();
        using var limiter = new SharedBucketRateLimiter(budget, SharedRateKind.Tokens, 6000, time);
        using var timeout = new CancellationTokenSource(Bound);

        using (var first = await limiter.AcquireAsync(10, timeout.Token))
        {
            Assert.True(first.IsAcquired);
        }

        // The slice was 150: 140 at hand. A call used 200 more than it reserved: 140 pay for it, 60 are owed.
        Assert.Equal(140, limiter.GetStatistics()!.CurrentAvailablePermits);
        limiter.Settle(200);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
        using (var second = await limiter.AcquireAsync(10, timeout.Token))
        {
            Assert.True(second.IsAcquired);
        }

        Assert.Equal(60, budget.LastDebt);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        // More than a second later, what was left of the slice is gone: the next call asks again.
        time.Advance(SharedBucketRateLimiter.HoldFor + TimeSpan.FromMilliseconds(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task A_call_waits_while_the_budget_is_empty_and_is_served_once_it_refills()
    {
        var budget = new Budget(available: 0);
        using var limiter = new SharedBucketRateLimiter(budget, SharedRateKind.Requests, 60);
        using var timeout = new CancellationTokenSource(Bound);

        var waiting = limiter.AcquireAsync(1, timeout.Token).AsTask();
        await Eventually.TrueAsync(() => budget.Asks >= 2, "the limiter asked again after the empty answer");
        Assert.False(waiting.IsCompleted);
        budget.Add(1);
        Assert.True((await waiting).IsAcquired);

        // A cancelled wait ends with its token.
        using var cancel = new CancellationTokenSource();
        var cancelled = limiter.AcquireAsync(1, cancel.Token).AsTask();
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
    }

    /// <summary>An in-memory budget: grants what it holds, asks the taker to come back in 20 ms when it is empty.</summary>
    private sealed class Budget(long available) : ISharedRateLimits
    {
        private readonly Lock _lock = new();
        private long _available = available;
        private int _asks;
        private long _granted;
        private long _lastDebt;

        public int Asks => Volatile.Read(ref _asks);

        public long Granted => Interlocked.Read(ref _granted);

        public long LastDebt => Interlocked.Read(ref _lastDebt);

        public DateTimeOffset? PausedUntil => null;

        public void Add(long permits)
        {
            lock (_lock)
            {
                _available += permits;
            }
        }

        public ValueTask<SharedRateGrant> TakeAsync(SharedRateKind kind, int wanted, long debt, int perMinute, int burst, CancellationToken cancellationToken)
        {
            lock (_lock)
            {
                _asks++;
                _lastDebt = debt;
                _available -= debt;
                var granted = (int)Math.Clamp(_available, 0, wanted);
                _available -= granted;
                _granted += granted;
                return ValueTask.FromResult(new SharedRateGrant(granted, granted < wanted ? TimeSpan.FromMilliseconds(20) : TimeSpan.Zero));
            }
        }

        public void Pause(TimeSpan pause)
        {
        }
    }

    /// <summary>A clock that moves only when told (timers are the system's).</summary>
    private sealed class ManualTime : TimeProvider
    {
        private long _ticks = 1_000_000;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    }
}
