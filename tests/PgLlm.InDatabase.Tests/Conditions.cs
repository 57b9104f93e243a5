namespace PgLlm.InDatabase.Tests;

/// <summary>Waits on a condition (usually a query) instead of sleeping: polls until it holds, failing after a bound.</summary>
internal static class Conditions
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>Polls <paramref name="condition"/> until it is true; fails the test naming <paramref name="what"/> after <paramref name="bound"/>.</summary>
    public static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan bound, string what)
    {
        var deadline = DateTimeOffset.UtcNow + bound;
        while (!await condition())
        {
            if (DateTimeOffset.UtcNow >= deadline)
            {
                Assert.Fail($"waited {bound.TotalSeconds:0.#} s for {what}");
            }

            await Task.Delay(PollInterval);
        }
    }
}
