using System.Threading.Channels;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// One endpoint's share of the worker: its claim filter, its slots and the hand-off between its claim loop
/// and its call runners. A lane claims up to half its concurrency ahead (<see cref="Ahead"/>): those jobs wait
/// in <see cref="Jobs"/> for a runner, so a call that ends is followed at once by the next, without a
/// claim's round trip in between; and while jobs wait, the lane claims only once at least half that many are
/// wanted (<see cref="WorthClaiming"/>), so a worker whose calls end one at a time (a slow model) claims in
/// batches rather than one job per call: with a 200 ms model at concurrency 128, claims of 34 jobs (17 with
/// a quarter ahead), half the claims and inputs reads.
/// </summary>
internal sealed class EndpointLane
{
    /// <summary>
    /// The claim loop's wake-up: set by a call that ends (when the lane is worth claiming for), by a
    /// notification and by the last write-back; at most one pending, consumed by the wait.
    /// </summary>
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    private int _calls;

    public EndpointLane(string? endpoint, int concurrency, string configHash = "")
    {
        Endpoint = endpoint;
        Gate = new EndpointGate(EndpointGovernor.NameOf(endpoint), configHash);
        Concurrency = concurrency;
        Ahead = concurrency < 4 ? 0 : concurrency / 2;
        LiveReserve = concurrency / 8;
        Slots = new SemaphoreSlim(concurrency + Ahead, concurrency + Ahead);
        // Never full: the slots bound what is claimed. A runner waiting for a job runs on, up to its
        // model call, on the claim loop's thread, instead of waking a pool thread per job.
        Jobs = Channel.CreateBounded<CallWork>(new BoundedChannelOptions(concurrency + Ahead)
        {
            SingleWriter = true,
            AllowSynchronousContinuations = true,
        });
    }

    /// <summary>The named endpoint; null for the default one.</summary>
    public string? Endpoint { get; }

    /// <summary>This worker's view of the endpoint's shared state (see <see cref="EndpointGovernor"/>).</summary>
    public EndpointGate Gate { get; }

    /// <summary>Model calls in flight at once: the number of call runners.</summary>
    public int Concurrency { get; }

    /// <summary>Jobs claimed beyond the concurrency, waiting for a runner: half of it, none below a concurrency of 4.</summary>
    public int Ahead { get; }

    /// <summary>
    /// Calls kept for live work: re-run and backfill jobs (priority above 0) fill at most the concurrency minus
    /// these, so a live job finds a free call at once while a re-run keeps the others busy. An eighth of the
    /// concurrency; none below 8.
    /// </summary>
    public int LiveReserve { get; }

    /// <summary>How many re-run and backfill jobs a claim may take now: what the free slots hold beyond the jobs ahead and the live reserve.</summary>
    public int LowPriorityRoom => Math.Max(0, Slots.CurrentCount - Ahead - LiveReserve);

    /// <summary>Taken at the claim, one per job; given back when the job's model call ends (or it is given back unstarted).</summary>
    public SemaphoreSlim Slots { get; }

    /// <summary>Claimed jobs on their way from the claim loop to the runners.</summary>
    public Channel<CallWork> Jobs { get; }

    /// <summary>Model calls in flight now.</summary>
    public int CallsInFlight => Volatile.Read(ref _calls);

    /// <summary>Claimed jobs not yet taken by a runner.</summary>
    public int Waiting => Jobs.Reader.Count;

    /// <summary>Jobs claimed and not yet past their model call.</summary>
    public int Busy => Concurrency + Ahead - Slots.CurrentCount;

    /// <summary>Whether to claim now: a slot is free, and no claimed job waits or half the jobs ahead are wanted.</summary>
    public bool WorthClaiming => Slots.CurrentCount > 0 && (Waiting == 0 || Slots.CurrentCount >= Math.Max(1, Ahead / 2));

    public TaskFilter Filter { get; set; } = TaskFilter.Any;

    /// <summary>Whether this lane's claims can match a task at all.</summary>
    public bool CanClaim => Filter.Only is not { Length: 0 };

    public void CallStarted() => Interlocked.Increment(ref _calls);

    /// <summary>A call ended: its slot is free, and the claim loop is woken if it would claim now.</summary>
    public void CallEnded()
    {
        Interlocked.Decrement(ref _calls);
        Slots.Release();
        if (WorthClaiming)
        {
            Wake();
        }
    }

    /// <summary>Wakes the claim loop (or its next wait, when it is not waiting).</summary>
    public void Wake() => _wake.Writer.TryWrite(true);

    /// <summary>Waits until woken or until <paramref name="timeout"/>; false when it timed out.</summary>
    public async Task<bool> WaitAsync(TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        if (_wake.Reader.TryRead(out _))
        {
            return true;
        }

        using var timer = new CancellationTokenSource(timeout, time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(timer.Token, cancellationToken);
        try
        {
            await _wake.Reader.ReadAsync(either.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
