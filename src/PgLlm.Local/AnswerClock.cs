using System.Diagnostics;

namespace PgLlm.Local;

/// <summary>
/// The local model server's answer delays: one thread that sleeps until the next answer is due and then
/// releases every answer due by then, each continuing (to write its response) on that thread. With
/// <see cref="Task.Delay(TimeSpan, CancellationToken)"/> each delayed answer cost a timer firing (often two:
/// the timer may fire up to a tick early, and the answer must never come before its delay) and a thread-pool
/// wake-up to write the response; this server shares the machine with the database in tests and benchmarks,
/// where those wake-ups are load the system under test would not carry with a remote model.
/// </summary>
internal sealed class AnswerClock : IDisposable
{
    private readonly object _gate = new();
    private readonly PriorityQueue<TaskCompletionSource, long> _due = new();
    private readonly Thread _thread;
    private bool _stopped;

    public AnswerClock()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "PgLlm answer clock" };
        _thread.Start();
    }

    /// <summary>Completes no earlier than <paramref name="delay"/> from now (cancelled with the token).</summary>
    public Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        if (delay <= TimeSpan.Zero)
        {
            return Task.CompletedTask;
        }

        cancellationToken.ThrowIfCancellationRequested();
        var due = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
        // Completed synchronously by the clock's thread: the caller writes its answer there.
        var answer = new TaskCompletionSource();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopped, this);
            var wakeEarlier = !_due.TryPeek(out _, out var earliest) || due < earliest;
            _due.Enqueue(answer, due);
            if (wakeEarlier)
            {
                Monitor.Pulse(_gate);
            }
        }

        // Cancelled while waiting, the wait ends at once; the clock's completion later is a no-op.
        return answer.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Stops the thread; answers still waiting are cancelled.</summary>
    public void Dispose()
    {
        TaskCompletionSource[] waiting;
        lock (_gate)
        {
            if (_stopped)
            {
                return;
            }

            _stopped = true;
            waiting = _due.UnorderedItems.Select(item => item.Element).ToArray();
            _due.Clear();
            Monitor.Pulse(_gate);
        }

        foreach (var answer in waiting)
        {
            answer.TrySetCanceled();
        }

        // Disposed from an answer's continuation, which runs on the clock's thread: it ends by itself.
        if (Thread.CurrentThread != _thread)
        {
            _thread.Join();
        }
    }

    private void Run()
    {
        var ready = new List<TaskCompletionSource>();
        while (true)
        {
            lock (_gate)
            {
                while (true)
                {
                    if (_stopped)
                    {
                        return;
                    }

                    if (!_due.TryPeek(out _, out var earliest))
                    {
                        Monitor.Wait(_gate);
                        continue;
                    }

                    var now = Stopwatch.GetTimestamp();
                    if (earliest <= now)
                    {
                        while (_due.TryPeek(out _, out var next) && next <= now)
                        {
                            ready.Add(_due.Dequeue());
                        }

                        break;
                    }

                    // Rounded up to whole milliseconds: never woken before the answer is due.
                    var wait = (int)Math.Ceiling((earliest - now) * 1000.0 / Stopwatch.Frequency);
                    Monitor.Wait(_gate, Math.Max(1, wait));
                }
            }

            foreach (var answer in ready)
            {
                answer.TrySetResult();
            }

            ready.Clear();
        }
    }
}
