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
/// framework limiter takes a wait from the server. Added by <see cref="PgLlmChatClientBuilderExtensions.UsePgLlmRateLimiting"/>.
/// </summary>
public sealed class RateLimitingChatClient : DelegatingChatClient
{
    private readonly PgLlmRateLimitOptions _options;
    private readonly string? _endpointName;
    private readonly TimeProvider _time;
    private readonly RateLimiter? _requests;
    private readonly TokenBucketRateLimiter? _tokens;
    private readonly int _tokenLimit;
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
        if (options.RequestsPerMinute is { } rpm)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(rpm, 1, "RequestsPerMinute");
            _requests = new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
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
            _tokens = new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
            {
                TokenLimit = tpm,
                TokensPerPeriod = Math.Max(1, tpm / 60),
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = int.MaxValue,
                QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                AutoReplenishment = true,
            });
        }
    }

    /// <summary>Until when calls are paused after a 429; null when they are not.</summary>
    public DateTimeOffset? PausedUntil
    {
        get
        {
            var until = new DateTimeOffset(Interlocked.Read(ref _pausedUntilTicks), TimeSpan.Zero);
            return until > _time.GetUtcNow() ? until : null;
        }
    }

    /// <summary>Permits (requests, and tokens) that calls wait for in the limiters' queues.</summary>
    internal long QueuedPermits =>
        (_requests?.GetStatistics()?.CurrentQueuedCount ?? 0) + (_tokens?.GetStatistics()?.CurrentQueuedCount ?? 0);

    /// <inheritdoc />
    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var list = messages as IReadOnlyCollection<ChatMessage> ?? messages.ToList();
        // Without a token budget nothing reads the estimate: skip building each message's text.
        var estimate = _tokens is null ? 0 : EstimateTokens(list, options);
        for (var resends = 0; ; resends++)
        {
            await WaitOutPauseAsync(cancellationToken).ConfigureAwait(false);
            using var request = await AcquireAsync(_requests, 1, cancellationToken).ConfigureAwait(false);
            using var tokens = await AcquireAsync(_tokens, Math.Min(estimate, _tokenLimit), cancellationToken).ConfigureAwait(false);
            try
            {
                var response = await base.GetResponseAsync(list, options, cancellationToken).ConfigureAwait(false);
                Interlocked.Exchange(ref _consecutiveThrottles, 0);
                var used = response.Usage?.TotalTokenCount ?? ((response.Usage?.InputTokenCount ?? 0) + (response.Usage?.OutputTokenCount ?? 0));
                if (_tokens is not null && used > estimate)
                {
                    // The call used more than it reserved: take the difference from the budget now,
                    // which delays the next calls rather than this one.
                    _ = PayDebtAsync((int)Math.Min(used - estimate, _tokenLimit));
                }

                return response;
            }
            catch (Exception ex) when (IsThrottled(ex, out var retryAfter) && resends < _options.ThrottleRetries && !cancellationToken.IsCancellationRequested)
            {
                Pause(retryAfter);
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
        await WaitOutPauseAsync(cancellationToken).ConfigureAwait(false);
        using var request = await AcquireAsync(_requests, 1, cancellationToken).ConfigureAwait(false);
        using var tokens = _tokens is null ? null
            : await AcquireAsync(_tokens, Math.Min(EstimateTokens(list, options), _tokenLimit), cancellationToken).ConfigureAwait(false);
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
            _requests?.Dispose();
            _tokens?.Dispose();
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

    private void Pause(TimeSpan? retryAfter)
    {
        var throttles = Interlocked.Increment(ref _consecutiveThrottles);
        var backoff = TimeSpan.FromTicks((long)Math.Min(
            _options.ThrottleBackoff.Ticks * Math.Pow(2, Math.Min(throttles - 1, 30)),
            _options.MaxThrottleBackoff.Ticks));
        var until = (_time.GetUtcNow() + (retryAfter ?? backoff)).UtcTicks;
        long current;
        do
        {
            current = Interlocked.Read(ref _pausedUntilTicks);
        }
        while (until > current && Interlocked.CompareExchange(ref _pausedUntilTicks, until, current) != current);
        PgLlmMetrics.RecordThrottled(_endpointName);
    }

    private async Task WaitOutPauseAsync(CancellationToken cancellationToken)
    {
        while (PausedUntil is { } until)
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

    private async Task PayDebtAsync(int tokens)
    {
        try
        {
            using var lease = await _tokens!.AcquireAsync(tokens, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // The client was disposed (the worker stopped): nothing left to slow down.
        }
    }
}
