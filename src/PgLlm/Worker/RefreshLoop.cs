using System.Threading.Channels;

namespace PgLlm.Worker;

/// <summary>
/// Keeps a worker's cached view of shared state fresh (the endpoint governor's states, the daily budgets): one read
/// before the first claim, then one every interval, or at once when nudged (a notification said it changed), until
/// stopped or until the view is no longer wanted. A read that fails is reported and the view keeps its last state;
/// the next read tries again.
/// </summary>
internal sealed class RefreshLoop
{
    /// <summary>A pending request to read now; at most one.</summary>
    private readonly Channel<bool> _nudge = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly Func<CancellationToken, Task> _refresh;
    private readonly TimeSpan _interval;
    private readonly TimeProvider _time;
    private readonly Action<Exception> _failed;
    private readonly Func<bool> _wanted;

    /// <param name="refresh">One read of the shared state into the view.</param>
    /// <param name="interval">The longest time between two reads.</param>
    /// <param name="time">The clock of the interval.</param>
    /// <param name="failed">Reports a read that failed (the loop goes on).</param>
    /// <param name="wanted">Whether reads are still wanted (checked before each); always, when null.</param>
    public RefreshLoop(Func<CancellationToken, Task> refresh, TimeSpan interval, TimeProvider time, Action<Exception> failed, Func<bool>? wanted = null)
    {
        _refresh = refresh;
        _interval = interval;
        _time = time;
        _failed = failed;
        _wanted = wanted ?? (static () => true);
    }

    /// <summary>Has the state read at once.</summary>
    public void Nudge() => _nudge.Writer.TryWrite(true);

    /// <summary>The first read, before the first claim; a failure is reported and leaves the view as it was.</summary>
    public async Task FirstAsync(CancellationToken cancellationToken)
    {
        if (!_wanted())
        {
            return;
        }

        try
        {
            await ReadOnceAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Reads every interval, or at once when nudged, until stopped or no longer wanted.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (!cancellationToken.IsCancellationRequested && _wanted())
            {
                await NextAsync(cancellationToken).ConfigureAwait(false);
                await ReadOnceAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task ReadOnceAsync(CancellationToken cancellationToken)
    {
        try
        {
            await _refresh(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            _failed(ex);
        }
    }

    /// <summary>Waits for a nudge or the interval, whichever comes first.</summary>
    private async Task NextAsync(CancellationToken cancellationToken)
    {
        if (_nudge.Reader.TryRead(out _))
        {
            return;
        }

        using var timer = new CancellationTokenSource(_interval, _time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(timer.Token, cancellationToken);
        try
        {
            await _nudge.Reader.ReadAsync(either.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The interval passed.
        }
    }
}
