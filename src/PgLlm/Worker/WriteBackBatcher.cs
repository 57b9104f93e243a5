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
/// batching, so an idle worker adds no latency. Every job's own state or exception goes to the outcome callback.
/// Each writer keeps a connection of its own: a pooled one is reset (<c>DISCARD ALL</c>) on each return to the
/// pool, which drops the plans the session cached for the write-back functions. A lost connection (a server
/// restart) is not the job's failure: the write is tried again on a new connection after a backoff, so an answer
/// already paid for is not asked for again. The queue of answers is bounded: while the database is slower than
/// the model, runners wait to hand in their answers and start no new calls.
/// </summary>
internal sealed class WriteBackBatcher : IDisposable
{
    /// <summary>At most this many jobs per batch: PostgreSQL caches 64 subtransactions per transaction.</summary>
    public const int MaxBatch = 64;

    /// <summary>Batches written at once: one can commit (WAL flush) while the next executes.</summary>
    private const int Writers = 2;

    /// <summary>Tries of one write while its connection fails (about 25 s of backoff in all).</summary>
    private const int FaultTries = 8;

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
    private readonly Func<WriteBack, string?, Exception?, ValueTask> _settled;
    private readonly Func<int> _callsInFlight;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _collecting = new(1, 1);
    private readonly Channel<WriteBack> _pending;
    private readonly Task[] _writers;

    /// <summary>Set while a writer lingers: completed by the answer that fills its batch.</summary>
    private TaskCompletionSource? _lingerFilled;

    /// <summary>How many queued answers fill the lingering writer's batch.</summary>
    private int _lingerWanted;

    /// <summary>Answers handed in and not yet settled.</summary>
    private int _backlog;

    /// <summary>1 once <see cref="CompleteAndDrainAsync"/> was called: no answer is coming, so no writer lingers.</summary>
    private int _completing;

    /// <param name="queue">Where answers are written.</param>
    /// <param name="settled">Told each job's outcome once its write ended: its new state, or the error.</param>
    /// <param name="callsInFlight">The worker's model calls in flight now: the answers still to come.</param>
    /// <param name="capacity">Answers held at most (handed in, not yet being written).</param>
    /// <param name="time">The clock of the linger and the backoff.</param>
    public WriteBackBatcher(
        JobQueue queue, Func<WriteBack, string?, Exception?, ValueTask> settled, Func<int>? callsInFlight = null, int capacity = 2 * MaxBatch, TimeProvider? time = null)
    {
        _queue = queue;
        _settled = settled;
        _callsInFlight = callsInFlight ?? (() => 0);
        _time = time ?? TimeProvider.System;
        _pending = Channel.CreateBounded<WriteBack>(new BoundedChannelOptions(Math.Max(capacity, 1)) { SingleReader = false, SingleWriter = false });
        _writers = new Task[Writers];
        for (var i = 0; i < Writers; i++)
        {
            _writers[i] = Task.Run(WriteLoopAsync, CancellationToken.None);
        }
    }

    /// <summary>Called after an outcome left no answer waiting to be written.</summary>
    public Action? Idle { get; set; }

    /// <summary>Answers handed in whose outcome is not yet settled.</summary>
    public int Backlog => Volatile.Read(ref _backlog);

    /// <summary>Answers handed in that no writer has taken yet.</summary>
    public int Queued => _pending.Reader.Count;

    /// <summary>Hands in one answer to write back; waits only while the queue of answers is full.</summary>
    public async ValueTask SubmitAsync(WriteBack write)
    {
        Interlocked.Increment(ref _backlog);
        if (!_pending.Writer.TryWrite(write))
        {
            await _pending.Writer.WriteAsync(write, CancellationToken.None).ConfigureAwait(false);
        }

        if (Volatile.Read(ref _lingerFilled) is { } filled && _pending.Reader.Count >= Volatile.Read(ref _lingerWanted))
        {
            filled.TrySetResult();
        }
    }

    /// <summary>Writes what is queued, then stops. Called after every runner has handed in its last answer.</summary>
    public async Task CompleteAndDrainAsync()
    {
        _pending.Writer.TryComplete();
        // Full fences on both sides (here and where a writer publishes its signal): either this sees the
        // lingering writer's signal, or that writer sees the flag. The channel's own completion is no help:
        // a completed reader only reports it once the last answer was read.
        Interlocked.Exchange(ref _completing, 1);
        Volatile.Read(ref _lingerFilled)?.TrySetResult();
        await Task.WhenAll(_writers).ConfigureAwait(false);
    }

    /// <summary>Releases the collecting lock; call after <see cref="CompleteAndDrainAsync"/>.</summary>
    public void Dispose() => _collecting.Dispose();

    private async Task WriteLoopAsync()
    {
        var batch = new List<WriteBack>(MaxBatch);
        var reader = _pending.Reader;
        var writer = _queue.KeepConnection();
        try
        {
            while (await CollectAsync(batch, reader).ConfigureAwait(false))
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
    private async Task<bool> CollectAsync(List<WriteBack> batch, ChannelReader<WriteBack> reader)
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
    private async Task LingerAsync(List<WriteBack> batch, ChannelReader<WriteBack> reader)
    {
        var wanted = LingerBatch - batch.Count;
        var filled = new TaskCompletionSource();
        Volatile.Write(ref _lingerWanted, wanted);
        Interlocked.Exchange(ref _lingerFilled, filled);
        // An answer queued, or the batcher completed, before the signal was published.
        if (reader.Count >= wanted || Volatile.Read(ref _completing) == 1)
        {
            filled.TrySetResult();
        }

        await filled.Task.WaitAsync(Linger, _time).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Volatile.Write(ref _lingerFilled, null);
        while (batch.Count < MaxBatch && reader.TryRead(out var next))
        {
            batch.Add(next);
        }
    }

    private async Task WriteBatchAsync(List<WriteBack> batch, KeptConnection writer)
    {
        IReadOnlyList<BatchOutcome> outcomes;
        try
        {
            var connection = await writer.GetAsync(CancellationToken.None).ConfigureAwait(false);
            outcomes = await _queue.CompleteBatchAsync(batch, CancellationToken.None, connection).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The batch as a whole failed (connection lost, statement cancelled, server shutting
            // down): nothing of it was committed. Each job then gets its own transaction, as without
            // batching, so every job gets its own outcome.
            await writer.CloseAsync().ConfigureAwait(false);
            foreach (var write in batch)
            {
                await WriteAloneAsync(write, writer).ConfigureAwait(false);
            }

            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            var write = batch[i];
            var outcome = i < outcomes.Count && outcomes[i].JobId == write.Job.Id ? outcomes[i] : null;
            if (outcome?.State is { } state)
            {
                await SettleAsync(write, state, null).ConfigureAwait(false);
            }
            else if (outcome is null || outcome.ErrorCode == LockNotAvailable)
            {
                await WriteAloneAsync(write, writer).ConfigureAwait(false);
            }
            else
            {
                // The job's own error, raised in its subtransaction: the same error the single-job
                // statement would have thrown, so the worker classifies it the same way.
                await SettleAsync(write, null, new PostgresException(outcome.Error ?? "write-back failed", "ERROR", "ERROR", outcome.ErrorCode ?? "XX000")).ConfigureAwait(false);
            }
        }
    }

    /// <summary>One job's write-back in its own transaction, tried again on a new connection while the connection fails.</summary>
    private async Task WriteAloneAsync(WriteBack write, KeptConnection writer)
    {
        var backoff = new Backoff(_time);
        for (var attempt = 1; ; attempt++)
        {
            string state;
            try
            {
                var connection = await writer.GetAsync(CancellationToken.None).ConfigureAwait(false);
                state = await _queue.CompleteAsync(write, CancellationToken.None, connection).ConfigureAwait(false);
            }
            catch (Exception ex) when (attempt < FaultTries && DatabaseFault.IsConnectionFault(ex))
            {
                await writer.CloseAsync().ConfigureAwait(false);
                await backoff.WaitAsync(CancellationToken.None).ConfigureAwait(false);
                continue;
            }
            catch (Exception ex)
            {
                // The job's own error leaves the connection open; anything else may have broken it.
                await writer.CloseIfBrokenAsync(ex).ConfigureAwait(false);
                await SettleAsync(write, null, ex).ConfigureAwait(false);
                return;
            }

            await SettleAsync(write, state, null).ConfigureAwait(false);
            return;
        }
    }

    private async ValueTask SettleAsync(WriteBack write, string? state, Exception? error)
    {
        await _settled(write, state, error).ConfigureAwait(false);
        if (Interlocked.Decrement(ref _backlog) == 0)
        {
            Idle?.Invoke();
        }
    }
}
