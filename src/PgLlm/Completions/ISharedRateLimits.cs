namespace PgLlm.Completions;

/// <summary>
/// An endpoint's rate limits and 429 pause as held outside this process, for every process that calls the
/// endpoint together (the worker keeps them in PostgreSQL). <see cref="RateLimitingChatClient"/> takes its permits
/// from it in slices (<see cref="SharedBucketRateLimiter"/>) instead of from its own per-process limiters.
/// </summary>
internal interface ISharedRateLimits
{
    /// <summary>Until when every call of the endpoint waits (a 429 that any process met); null when not paused. Read from memory.</summary>
    DateTimeOffset? PausedUntil { get; }

    /// <summary>
    /// Takes up to <paramref name="wanted"/> permits of <paramref name="kind"/> (fewer, or none, when the shared bucket
    /// holds fewer), after settling <paramref name="debt"/> (permits used beyond those taken; negative: taken and unused).
    /// </summary>
    /// <param name="kind">Requests or tokens.</param>
    /// <param name="wanted">The permits wanted.</param>
    /// <param name="debt">The permits to settle first.</param>
    /// <param name="perMinute">The configured limit per minute.</param>
    /// <param name="burst">The most permits the bucket holds.</param>
    /// <param name="cancellationToken">Ends the wait for the answer.</param>
    ValueTask<SharedRateGrant> TakeAsync(SharedRateKind kind, int wanted, long debt, int perMinute, int burst, CancellationToken cancellationToken);

    /// <summary>The endpoint answered 429: pauses every process's calls for <paramref name="pause"/>. Does not wait for the report.</summary>
    void Pause(TimeSpan pause);
}
