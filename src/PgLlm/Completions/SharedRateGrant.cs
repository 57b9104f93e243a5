namespace PgLlm.Completions;

/// <summary>What a shared rate-limit bucket granted (<see cref="ISharedRateLimits.TakeAsync"/>).</summary>
/// <param name="Granted">The permits granted; they count as spent.</param>
/// <param name="Wait">How long until the budget holds what is still wanted (up to its burst); zero when nothing is.</param>
internal readonly record struct SharedRateGrant(int Granted, TimeSpan Wait);
