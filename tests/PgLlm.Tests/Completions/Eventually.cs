namespace PgLlm.Tests;

/// <summary>Condition waits for tests: poll until a condition holds, failing after a bounded time.</summary>
internal static class Eventually
{
    private static readonly TimeSpan DefaultBound = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(10);

    /// <summary>Returns once <paramref name="condition"/> holds; fails the test if it does not within <paramref name="bound"/> (30 s).</summary>
    public static Task TrueAsync(Func<bool> condition, string what, TimeSpan? bound = null) =>
        TrueAsync(() => Task.FromResult(condition()), what, bound);

    /// <summary>Returns once <paramref name="condition"/> holds; fails the test if it does not within <paramref name="bound"/> (30 s).</summary>
    public static async Task TrueAsync(Func<Task<bool>> condition, string what, TimeSpan? bound = null)
    {
        var deadline = DateTime.UtcNow + (bound ?? DefaultBound);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out after {(bound ?? DefaultBound).TotalSeconds} s waiting until {what}.");
            }

            await Task.Delay(Poll);
        }
    }
}
