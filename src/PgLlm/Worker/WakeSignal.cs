namespace PgLlm.Worker;

/// <summary>
/// An auto-reset signal: <see cref="Set"/> wakes the one waiter, or the next one if nobody waits yet,
/// so a notification that arrives while the dispatcher is busy is never lost.
/// </summary>
internal sealed class WakeSignal
{
    private readonly object _gate = new();
    private TaskCompletionSource _next = NewSource();
    private bool _set;

    public void Set()
    {
        TaskCompletionSource toRelease;
        lock (_gate)
        {
            _set = true;
            toRelease = _next;
        }

        toRelease.TrySetResult();
    }

    /// <summary>Waits until set or until <paramref name="timeout"/>; consumes the signal either way. False when it timed out.</summary>
    public async Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        Task wait;
        lock (_gate)
        {
            if (_set)
            {
                _set = false;
                _next = NewSource();
                return true;
            }

            wait = _next.Task;
        }

        var signaled = true;
        try
        {
            await wait.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            signaled = false;
        }

        lock (_gate)
        {
            if (_set)
            {
                _set = false;
                _next = NewSource();
            }
        }

        return signaled;
    }

    private static TaskCompletionSource NewSource() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
