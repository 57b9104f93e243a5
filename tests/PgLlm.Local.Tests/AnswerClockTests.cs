using System.Collections.Concurrent;
using System.Diagnostics;

namespace PgLlm.Local.Tests;

/// <summary>The local model server's answer delays: never early, in due order, cancellable.</summary>
public sealed class AnswerClockTests
{
    [Fact]
    public async Task AnswersAreReleasedInDueOrderAndNeverEarly()
    {
        using var clock = new AnswerClock();
        var released = new ConcurrentQueue<int>();
        var started = Stopwatch.StartNew();
        // Enqueued latest-due first, so the clock must re-arm for each earlier answer.
        int[] delaysMs = [120, 80, 40, 0, 60];
        var waits = delaysMs.Select(async (ms, i) =>
        {
            var delay = TimeSpan.FromMilliseconds(ms);
            var begun = Stopwatch.GetTimestamp();
            await clock.DelayAsync(delay, CancellationToken.None);
            var waited = Stopwatch.GetElapsedTime(begun);
            Assert.True(waited >= delay, $"answer {i} came after {waited.TotalMilliseconds} ms, before its {ms} ms");
            released.Enqueue(ms);
        }).ToArray();

        await Task.WhenAll(waits).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([0, 40, 60, 80, 120], released.ToArray());
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(120));
    }

    [Fact]
    public async Task ACancelledWaitEndsAndTheOthersStillComplete()
    {
        using var clock = new AnswerClock();
        using var cancel = new CancellationTokenSource();
        var cancelled = clock.DelayAsync(TimeSpan.FromMinutes(5), cancel.Token);
        var kept = clock.DelayAsync(TimeSpan.FromMilliseconds(30), CancellationToken.None);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(TimeSpan.FromSeconds(30)));
        await kept.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(kept.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task DisposeCancelsWhatIsWaitingAndRefusesNewWaits()
    {
        var clock = new AnswerClock();
        var waiting = clock.DelayAsync(TimeSpan.FromMinutes(5), CancellationToken.None);

        clock.Dispose();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Throws<ObjectDisposedException>(() => { _ = clock.DelayAsync(TimeSpan.FromSeconds(1), CancellationToken.None); });
        Assert.True(clock.DelayAsync(TimeSpan.Zero, CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task DisposingFromAnAnswersContinuationOnTheClockThreadDoesNotHang()
    {
        var clock = new AnswerClock();
        string? clockThread = null;
        // Runs inline as the clock releases the answer, on its thread, as a server's response write does.
        var disposed = clock.DelayAsync(TimeSpan.FromMilliseconds(10), CancellationToken.None).ContinueWith(
            _ =>
            {
                clockThread = Thread.CurrentThread.Name;
                clock.Dispose();
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

        await disposed.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(disposed.IsCompletedSuccessfully);
        Assert.Equal("PgLlm answer clock", clockThread);
        Assert.Throws<ObjectDisposedException>(() => { _ = clock.DelayAsync(TimeSpan.FromSeconds(1), CancellationToken.None); });
    }
}
