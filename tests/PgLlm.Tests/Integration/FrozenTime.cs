namespace PgLlm.Tests.Integration;

/// <summary>A clock whose timers never fire: a wait with a timeout on it ends only when what it waits for happens.</summary>
internal sealed class FrozenTime : TimeProvider
{
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => new NeverTimer();

    private sealed class NeverTimer : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => true;

        public void Dispose()
        {
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
