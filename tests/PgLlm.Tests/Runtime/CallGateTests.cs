using PgLlm.Worker;
using Xunit;

namespace PgLlm.Tests.Runtime;

/// <summary>The model-call slots of an endpoint: first come, first served, handed over on the releasing thread.</summary>
public sealed class CallGateTests
{
    [Fact]
    public async Task Free_slots_are_taken_at_once_and_counted()
    {
        var gate = new CallGate(2);

        await gate.WaitAsync(CancellationToken.None);
        await gate.WaitAsync(CancellationToken.None);

        Assert.Equal(0, gate.CurrentCount);
        gate.Release();
        Assert.Equal(1, gate.CurrentCount);
    }

    [Fact]
    public void A_released_slot_goes_to_the_longest_waiter_which_runs_on_before_release_returns()
    {
        var gate = new CallGate(1);
        Assert.True(gate.WaitAsync(CancellationToken.None).IsCompleted);
        var order = new List<int>();
        var releasingThread = Environment.CurrentManagedThreadId;
        var ranOn = new int[3];
        var waiters = Enumerable.Range(0, 3).Select(i => Continue(gate.WaitAsync(CancellationToken.None), i)).ToArray();
        Assert.All(waiters, w => Assert.False(w.IsCompleted));

        gate.Release();
        // Inline: the first waiter's continuation has already run when Release returns.
        Assert.Equal([0], order);
        Assert.Equal(releasingThread, ranOn[0]);
        Assert.Equal(0, gate.CurrentCount);

        gate.Release();
        gate.Release();
        Assert.Equal([0, 1, 2], order);
        Assert.All(waiters, w => Assert.True(w.IsCompletedSuccessfully));

        // No one waits: the slot goes back to the pool.
        gate.Release();
        Assert.Equal(1, gate.CurrentCount);

        async Task Continue(Task wait, int index)
        {
            await wait;
            order.Add(index);
            ranOn[index] = Environment.CurrentManagedThreadId;
        }
    }

    [Fact]
    public async Task A_cancelled_waiter_is_skipped_and_its_turn_passes_to_the_next()
    {
        var gate = new CallGate(1);
        await gate.WaitAsync(CancellationToken.None);
        using var cancel = new CancellationTokenSource();
        var cancelled = gate.WaitAsync(cancel.Token);
        var next = gate.WaitAsync(CancellationToken.None);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.False(next.IsCompleted);

        gate.Release();
        Assert.True(next.IsCompletedSuccessfully);
        Assert.Equal(0, gate.CurrentCount);
        gate.Release();
        Assert.Equal(1, gate.CurrentCount);
    }

    [Fact]
    public async Task A_wait_with_a_cancelled_token_fails_only_when_it_would_have_to_wait()
    {
        var gate = new CallGate(1);
        using var cancel = new CancellationTokenSource();
        await cancel.CancelAsync();

        await gate.WaitAsync(cancel.Token);
        Assert.Throws<OperationCanceledException>(() => { _ = gate.WaitAsync(cancel.Token); });
        gate.Release();
        Assert.Equal(1, gate.CurrentCount);
    }

    [Fact]
    public async Task Concurrent_waits_and_releases_never_lose_or_duplicate_a_slot()
    {
        const int slots = 4;
        var gate = new CallGate(slots);
        var inside = 0;
        var most = 0;
        var workers = Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            for (var i = 0; i < 500; i++)
            {
                await gate.WaitAsync(CancellationToken.None);
                var now = Interlocked.Increment(ref inside);
                InterlockedMax(ref most, now);
                await Task.Yield();
                Interlocked.Decrement(ref inside);
                gate.Release();
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.InRange(most, 1, slots);
        Assert.Equal(slots, gate.CurrentCount);

        static void InterlockedMax(ref int target, int value)
        {
            int seen;
            while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
            {
            }
        }
    }
}
