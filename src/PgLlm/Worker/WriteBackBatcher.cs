using System.Threading.Channels;
using Npgsql;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// Group commit for write-backs. Answers that arrive while a write is in progress are written together
/// by the next one: one round trip and one commit for up to <see cref="MaxBatch"/> jobs (one task's jobs by
/// the task's set-based function; a batch it cannot write whole, or of several tasks, by
/// <c>llm.complete_batch</c>, each job in its own subtransaction), so one job's failure never undoes
/// another's result. Under load a writer waits up to <see cref="Linger"/> for more answers before it
/// writes (see <see cref="LingerBatch"/>). A lone answer is written with the single-job statement, exactly as without
/// batching, so an idle worker adds no latency. Every caller gets its own job's state or exception. Each
/// writer keeps a connection of its own: a pooled one is reset (<c>DISCARD ALL</c>) on each return to the
/// pool, which drops the plans the session cached for the write-back functions.
/// </summary>
internal sealed class WriteBackBatcher : IDisposable
{
    /// <summary>At most this many jobs per batch: PostgreSQL caches 64 subtransactions per transaction.</summary>
    public const int MaxBatch = 64;

    /// <summary>Batches written at once: one can commit (WAL flush) while the next executes.</summary>
    private const int Writers = 2;

    /// <summary>The batch gave up waiting for a lock (lock_timeout): that job is written on its own.</summary>
    private const string LockNotAvailable = "55P03";

    /// <summary>
    /// Under load (at least <see cref="LingerCalls"/> model calls in flight), a writer with fewer answers than
    /// this waits up to <see cref="Linger"/> for more, so answers that end one at a time (a slow model) are
    /// written in batches rather than one commit each (with a 200 ms model at concurrency 128: 43 jobs per
    /// commit; 17 with 32 and 20 ms, 3.4 without lingering). Each write-back call has a fixed cost in the
    /// database (round trip, function call, commit) and wakes the writer and its backend, which the drain's
    /// neighbours on the same cores pay for: see docs/benchmarks.md. Never when few calls are in flight: an
    /// idle worker's answer is written at once.
    /// </summary>
    private const int LingerBatch = MaxBatch;

    private const int LingerCalls = 16;

    private static readonly TimeSpan Linger = TimeSpan.FromMilliseconds(50);

    private readonly JobQueue _queue;
    private readonly Func<int> _callsInFlight;
    private readonly SemaphoreSlim _collecting = new(1, 1);
    private readonly Channel<Pending> _pending = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });
    private readonly Task[] _writers;

    /// <summary>Set while a writer lingers: completed by the answer that fills its batch.</summary>
    private TaskCompletionSource? _lingerFilled;

    /// <summary>How many queued answers fill the lingering writer's batch.</summary>
    private int _lingerWanted;

    /// <param name="queue">Where answers are written.</param>
    /// <param name="callsInFlight">The worker's model calls in flight now: the answers still to come.</param>
    public WriteBackBatcher(JobQueue queue, Func<int>? callsInFlight = null)
    {
        _queue = queue;
        _callsInFlight = callsInFlight ?? (() => 0);
        _writers = new Task[Writers];
        for (var i = 0; i < Writers; i++)
        {
            _writers[i] = Task.Run(WriteLoopAsync, CancellationToken.None);
        }
    }

    /// <summary>Writes one answer back; completes with the job's new state once its write committed.</summary>
    public Task<string> CompleteAsync(WriteBack write)
    {
        // The outcome's continuation (the rest of the job: metrics, the log line) runs on the writer's
        // thread as the batch is settled, rather than each job waking a pool thread of its own.
        var pending = new Pending(write, new TaskCompletionSource<string>());
        if (!_pending.Writer.TryWrite(pending))
        {
            return _queue.CompleteAsync(write, CancellationToken.None);
        }

        if (Volatile.Read(ref _lingerFilled) is { } filled && _pending.Reader.Count >= Volatile.Read(ref _lingerWanted))
        {
            filled.TrySetResult();
        }

        return pending.Result.Task;
    }

    /// <summary>Releases the collecting lock; call after <see cref="CompleteAndDrainAsync"/>.</summary>
    public void Dispose() => _collecting.Dispose();

    /// <summary>Writes what is queued, then stops. Called after every job has handed in its answer.</summary>
    public async Task CompleteAndDrainAsync()
    {
        _pending.Writer.TryComplete();
        Volatile.Read(ref _lingerFilled)?.TrySetResult();
        await Task.WhenAll(_writers).ConfigureAwait(false);
    }

    private async Task WriteLoopAsync()
    {
        var batch = new List<Pending>(MaxBatch);
        var reader = _pending.Reader;
        var writer = _queue.KeepConnection();
        try
        {
            while (await CollectAsync(batch, reader).ConfigureAwait(false))
            {
                try
                {
                    if (batch.Count == 1)
                    {
                        await WriteAloneAsync(batch[0], writer).ConfigureAwait(false);
                    }
                    else if (batch.Count > 1)
                    {
                        await WriteBatchAsync(batch, writer).ConfigureAwait(false);
                    }
                }
                catch (Exception ex)
                {
                    // Never leave a job waiting for an outcome: whatever went wrong is its failed attempt.
                    await writer.CloseAsync().ConfigureAwait(false);
                    foreach (var pending in batch)
                    {
                        pending.Result.TrySetException(ex);
                    }
                }
            }
        }
        finally
        {
            await writer.CloseAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Takes the next batch: what is queued, and under load what arrives within <see cref="Linger"/>. One writer
    /// collects at a time (the other may be writing meanwhile), so answers that arrive while a batch is being
    /// collected join it. False once the batcher is completed and drained.
    /// </summary>
    private async Task<bool> CollectAsync(List<Pending> batch, ChannelReader<Pending> reader)
    {
        batch.Clear();
        await _collecting.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (!await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
            {
                return false;
            }

            while (batch.Count < MaxBatch && reader.TryRead(out var next))
            {
                batch.Add(next);
            }

            if (batch.Count < LingerBatch && _callsInFlight() >= LingerCalls)
            {
                await LingerAsync(batch, reader).ConfigureAwait(false);
            }

            return true;
        }
        finally
        {
            _collecting.Release();
        }
    }

    /// <summary>
    /// Adds answers that arrive within <see cref="Linger"/>, until the batch has <see cref="LingerBatch"/>. The
    /// writer sleeps once, until the answer that fills the batch arrives or the time is up, rather than waking
    /// for each answer (a slow model's answers arrive one at a time) or looking at the queue every few
    /// milliseconds: with the 200 ms model at concurrency 128, about 17 wake-ups a second instead of 200.
    /// </summary>
    private async Task LingerAsync(List<Pending> batch, ChannelReader<Pending> reader)
    {
        var wanted = LingerBatch - batch.Count;
        var filled = new TaskCompletionSource();
        Volatile.Write(ref _lingerWanted, wanted);
        Volatile.Write(ref _lingerFilled, filled);
        // An answer queued, or the batcher completed, before the signal was published.
        if (reader.Count >= wanted || reader.Completion.IsCompleted)
        {
            filled.TrySetResult();
        }

        await filled.Task.WaitAsync(Linger).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Volatile.Write(ref _lingerFilled, null);
        while (batch.Count < MaxBatch && reader.TryRead(out var next))
        {
            batch.Add(next);
        }
    }

    private async Task WriteBatchAsync(List<Pending> batch, KeptConnection writer)
    {
        IReadOnlyList<BatchOutcome> outcomes;
        try
        {
            var connection = await writer.GetAsync(CancellationToken.None).ConfigureAwait(false);
            outcomes = await _queue.CompleteBatchAsync(batch.ConvertAll(p => p.Write), CancellationToken.None, connection).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The batch as a whole failed (connection lost, statement cancelled, server shutting
            // down): nothing of it was committed. Each job then gets its own transaction, as without
            // batching, so every caller gets its own outcome.
            await writer.CloseAsync().ConfigureAwait(false);
            foreach (var pending in batch)
            {
                await WriteAloneAsync(pending, writer).ConfigureAwait(false);
            }

            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            var pending = batch[i];
            var outcome = i < outcomes.Count && outcomes[i].JobId == pending.Write.Job.Id ? outcomes[i] : null;
            if (outcome?.State is { } state)
            {
                pending.Result.TrySetResult(state);
            }
            else if (outcome is null || outcome.ErrorCode == LockNotAvailable)
            {
                await WriteAloneAsync(pending, writer).ConfigureAwait(false);
            }
            else
            {
                // The job's own error, raised in its subtransaction: the same error the single-job
                // statement would have thrown, so the worker classifies it the same way.
                pending.Result.TrySetException(new PostgresException(outcome.Error ?? "write-back failed", "ERROR", "ERROR", outcome.ErrorCode ?? "XX000"));
            }
        }
    }

    private async Task WriteAloneAsync(Pending pending, KeptConnection writer)
    {
        try
        {
            var connection = await writer.GetAsync(CancellationToken.None).ConfigureAwait(false);
            pending.Result.TrySetResult(await _queue.CompleteAsync(pending.Write, CancellationToken.None, connection).ConfigureAwait(false));
        }
        catch (Exception ex)
        {
            // The job's own error leaves the connection open; anything else (including a server
            // shutting down, reported as a PostgresException) may have broken it.
            await writer.CloseIfBrokenAsync(ex).ConfigureAwait(false);

            pending.Result.TrySetException(ex);
        }
    }

    private sealed record Pending(WriteBack Write, TaskCompletionSource<string> Result);
}
