using System.ClientModel;
using System.Net;
using System.Threading.RateLimiting;
using Microsoft.Extensions.AI;
using PgLlm.Failures;
using PgLlm.Observability;

namespace PgLlm.Completions;

/// <summary>
/// Keeps the calls of one endpoint under its provider's limits: requests per minute and tokens per
/// minute, shared by every concurrent call through this client. When the endpoint answers HTTP 429
/// anyway, every call through the client pauses (for <c>Retry-After</c>, or an exponential backoff)
/// and the throttled call is sent again, so a 429 slows the worker down instead of spending the job's
/// attempts. After <see cref="PgLlmRateLimitOptions.ThrottleRetries"/> such resends, or when the
/// caller's token (the model timeout) ends, the 429 is passed on to the worker as a failed attempt.
/// The per-minute limits are System.Threading.RateLimiting's <see cref="SlidingWindowRateLimiter"/> (requests)
/// and <see cref="TokenBucketRateLimiter"/> (tokens); only the pause on the endpoint's own 429 is PgLlm's, as no
/// framework limiter takes a wait from the server. A worker whose endpoint governor is on shares both with every
/// worker of its database (<see cref="ShareLimits"/>): the permits then come in slices from one bucket per endpoint
/// (<see cref="SharedBucketRateLimiter"/>), and a 429 pauses every worker. Added by
/// <see cref="PgLlmChatClientBuilderExtensions.UsePgLlmRateLimiting"/>.
/// </summary>
public sealed class RateLimitingChatClient : DelegatingChatClient
{
    private readonly PgLlmRateLimitOptions _options;
    private readonly string? _endpointName;
    private readonly TimeProvider _time;
    private readonly Limiters _local;
    private readonly int _tokenLimit;
    private Limiters _active;
    private long _pausedUntilTicks;
    private int _consecutiveThrottles;

    /// <summary>Creates the limiter around <paramref name="innerClient"/>.</summary>
    /// <param name="innerClient">The endpoint's client.</param>
    /// <param name="options">The limits.</param>
    /// <param name="endpointName">The endpoint's name, for metrics and errors.</param>
    /// <param name="timeProvider">The clock; the system clock when null.</param>
    public RateLimitingChatClient(IChatClient innerClient, PgLlmRateLimitOptions options, string? endpointName = null, TimeProvider? timeProvider = null)
        : base(innerClient)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _endpointName = endpointName;
        _time = timeProvider ?? TimeProvider.System;
        RateLimiter? requests = null;
        RateLimiter? tokens = null;
        if (options.RequestsPerMinute is { } rpm)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(rpm, 1, "RequestsPerMinute");
            requests = new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = rpm,
                Window = TimeSpan.FromMinutes(1),
                SegmentsPerWindow = 12,
                QueueLimit = int.MaxValue,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            });
        }

        if (options.TokensPerMinute is { } tpm)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(tpm, 1, "TokensPerMinute");
            // Refilled every second, so the budget flows evenly instead of in one burst per minute.
            _tokenLimit = tpm;
            tokens = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
            {
                TokenLimit = tpm,
                TokensPerPeriod = Math.Max(1, tpm / 60),
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = int.MaxValue,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            });
        }

        _local = new Limiters(requests, tokens, null);
        _active = _local;
    }

    /// <summary>Until when calls are paused after a 429 (this worker's, or, shared, any worker's); null when they are not.</summary>
    public DateTimeOffset? PausedUntil => PausedUntilOf(Volatile.Read(ref _active).Shared);

    /// <summary>Permits (requests, and tokens) that calls wait for in the limiters' queues.</summary>
    internal long QueuedPermits
    {
        get
        {
            var limits = Volatile.Read(ref _active);
            return (limits.Requests?.GetStatistics()?.CurrentQueuedCount ?? 0) + (limits.Tokens?.GetStatistics()?.CurrentQueuedCount ?? 0);
        }
    }

    /// <summary>
    /// Takes the permits from <paramref name="shared"/> (a bucket every worker of the database shares) instead of this
    /// client's own limiters, and reports and honours the shared 429 pause, until the returned handle is disposed.
    /// </summary>
    internal IDisposable ShareLimits(ISharedRateLimits shared)
    {
        ArgumentNullException.ThrowIfNull(shared);
        var limits = new Limiters(
            _options.RequestsPerMinute is { } rpm ? new SharedBucketRateLimiter(shared, SharedRateKind.Requests, rpm, _time) : null,
            _options.TokensPerMinute is { } tpm ? new SharedBucketRateLimiter(shared, SharedRateKind.Tokens, tpm, _time) : null,
            shared);
        Volatile.Write(ref _active, limits);
        return new Sharing(this, limits);
    }

    /// <inheritdoc />
    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var list = messages as IReadOnlyCollection<ChatMessage> ?? messages.ToList();
        // The limiters of this call: a worker that starts or stops sharing them does not change them mid-call.
        var limits = Volatile.Read(ref _active);
        // Without a token budget nothing reads the estimate: skip building each message's text.
        var estimate = limits.Tokens is null ? 0 : EstimateTokens(list, options);
        for (var resends = 0; ; resends++)
        {
            await WaitOutPauseAsync(limits.Shared, cancellationToken).ConfigureAwait(false);
            using var request = await AcquireAsync(limits.Requests, 1, cancellationToken).ConfigureAwait(false);
            using var tokens = await AcquireAsync(limits.Tokens, Math.Min(estimate, _tokenLimit), cancellationToken).ConfigureAwait(false);
            try
            {
                var response = await base.GetResponseAsync(list, options, cancellationToken).ConfigureAwait(false);
                Interlocked.Exchange(ref _consecutiveThrottles, 0);
                SettleTokens(limits.Tokens, response.Usage, estimate);
                return response;
            }
            catch (Exception ex) when (IsThrottled(ex, out var retryAfter) && resends < _options.ThrottleRetries && !cancellationToken.IsCancellationRequested)
            {
                Pause(retryAfter, limits.Shared);
            }
        }
    }

    /// <inheritdoc />
    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages,
        ChatOptions? options = null,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // A stream cannot be resent once it started; it only waits for its share of the limits.
        var list = messages as IReadOnlyCollection<ChatMessage> ?? messages.ToList();
        var limits = Volatile.Read(ref _active);
        await WaitOutPauseAsync(limits.Shared, cancellationToken).ConfigureAwait(false);
        using var request = await AcquireAsync(limits.Requests, 1, cancellationToken).ConfigureAwait(false);
        using var tokens = limits.Tokens is null ? null
            : await AcquireAsync(limits.Tokens, Math.Min(EstimateTokens(list, options), _tokenLimit), cancellationToken).ConfigureAwait(false);
        await foreach (var update in base.GetStreamingResponseAsync(list, options, cancellationToken).ConfigureAwait(false))
        {
            yield return update;
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _local.Requests?.Dispose();
            _local.Tokens?.Dispose();
        }

        base.Dispose(disposing);
    }

    /// <summary>A rough count of the tokens a call will use: about four characters per token, plus the output allowance.</summary>
    internal static int EstimateTokens(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        long characters = 0;
        foreach (var message in messages)
        {
            characters += message.Text?.Length ?? 0;
        }

        return (int)Math.Min(int.MaxValue, ((characters + 3) / 4) + 8 + (options?.MaxOutputTokens ?? 0));
    }

    /// <summary>Whether the endpoint said "too many requests", and when it said to come back.</summary>
    internal static bool IsThrottled(Exception exception, out TimeSpan? retryAfter)
    {
        if (FailureClassifier.EndpointFaultOf(exception) == EndpointFault.Quota)
        {
            // Out of quota: no pause helps; the endpoint governor stops the endpoint.
            retryAfter = null;
            return false;
        }

        switch (exception)
        {
            case ModelEndpointException { Status: 429 } endpoint:
                retryAfter = endpoint.RetryAfter;
                return true;
            case ClientResultException { Status: 429 } client:
                retryAfter = FailureClassifier.RetryAfter(client);
                return true;
            case HttpRequestException { StatusCode: HttpStatusCode.TooManyRequests }:
                retryAfter = null;
                return true;
            default:
                retryAfter = null;
                return false;
        }
    }

    private void Pause(TimeSpan? retryAfter, ISharedRateLimits? shared)
    {
        var throttles = Interlocked.Increment(ref _consecutiveThrottles);
        var backoff = TimeSpan.FromTicks((long)Math.Min(
            _options.ThrottleBackoff.Ticks * Math.Pow(2, Math.Min(throttles - 1, 30)),
            _options.MaxThrottleBackoff.Ticks));
        var pause = retryAfter ?? backoff;
        var until = (_time.GetUtcNow() + pause).UtcTicks;
        long current;
        do
        {
            current = Interlocked.Read(ref _pausedUntilTicks);
        }
        while (until > current && Interlocked.CompareExchange(ref _pausedUntilTicks, until, current) != current);
        // Shared, every worker of the database pauses too (this one already does).
        shared?.Pause(pause);
        PgLlmMetrics.RecordThrottled(_endpointName);
    }

    /// <summary>The later of this client's pause and the shared one; null when neither holds.</summary>
    private DateTimeOffset? PausedUntilOf(ISharedRateLimits? shared)
    {
        var until = new DateTimeOffset(Interlocked.Read(ref _pausedUntilTicks), TimeSpan.Zero);
        if (shared?.PausedUntil is { } sharedUntil && sharedUntil > until)
        {
            until = sharedUntil;
        }

        return until > _time.GetUtcNow() ? until : null;
    }

    private async Task WaitOutPauseAsync(ISharedRateLimits? shared, CancellationToken cancellationToken)
    {
        while (PausedUntilOf(shared) is { } until)
        {
            var wait = until - _time.GetUtcNow();
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, _time, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static async ValueTask<RateLimitLease?> AcquireAsync(RateLimiter? limiter, int permits, CancellationToken cancellationToken)
    {
        if (limiter is null)
        {
            return null;
        }

        var lease = await limiter.AcquireAsync(Math.Max(permits, 1), cancellationToken).ConfigureAwait(false);
        if (!lease.IsAcquired)
        {
            lease.Dispose();
            throw new InvalidOperationException("The rate limiter refused the call (its queue is full).");
        }

        return lease;
    }

    /// <summary>Settles a call's tokens: what it used beyond its reservation is taken from the bucket, which delays the next calls rather than this one.</summary>
    private void SettleTokens(RateLimiter? limiter, UsageDetails? usage, int estimate)
    {
        if (limiter is null || usage is null)
        {
            return;
        }

        var used = usage.TotalTokenCount ?? ((usage.InputTokenCount ?? 0) + (usage.OutputTokenCount ?? 0));
        if (limiter is SharedBucketRateLimiter shared)
        {
            // Shared, the difference goes both ways: a debt carries to the next slice, what was not used goes to the next calls.
            shared.Settle(used - Math.Max(1, Math.Min(estimate, _tokenLimit)));
        }
        else if (used > estimate)
        {
            _ = PayDebtAsync(limiter, (int)Math.Min(used - estimate, _tokenLimit));
        }
    }

    private static async Task PayDebtAsync(RateLimiter tokens, int debt)
    {
        try
        {
            using var lease = await tokens.AcquireAsync(debt, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // The client was disposed (the worker stopped): nothing left to slow down.
        }
    }

    /// <summary>The limiters calls take their permits from, and the shared bucket they come from (null: this worker's own).</summary>
    private sealed record Limiters(RateLimiter? Requests, RateLimiter? Tokens, ISharedRateLimits? Shared);

    /// <summary>Ends sharing: the client's own limiters again, the shared ones disposed.</summary>
    private sealed class Sharing(RateLimitingChatClient client, Limiters limits) : IDisposable
    {
        public void Dispose()
        {
            // Another worker of this process may share the client since: then its limiters stay.
            Interlocked.CompareExchange(ref client._active, client._local, limits);
            limits.Requests?.Dispose();
            limits.Tokens?.Dispose();
        }
    }
}
