namespace PgLlm.Worker;

/// <summary>
/// How long to wait after a database fault before trying again: 200 ms, doubled after each fault in a row,
/// at most 30 s; back to 200 ms after a success. Every loop that touches the database uses one.
/// </summary>
internal sealed class Backoff(TimeProvider time)
{
    private static readonly TimeSpan First = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan Longest = TimeSpan.FromSeconds(30);

    private TimeSpan _next = First;

    /// <summary>The delay the next <see cref="WaitAsync"/> waits.</summary>
    public TimeSpan Next => _next;

    /// <summary>A success: the next fault waits the shortest delay again.</summary>
    public void Reset() => _next = First;

    /// <summary>Waits the current delay and doubles the next one.</summary>
    public Task WaitAsync(CancellationToken cancellationToken)
    {
        var delay = _next;
        _next = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, Longest.Ticks));
        return Task.Delay(delay, time, cancellationToken);
    }
}
