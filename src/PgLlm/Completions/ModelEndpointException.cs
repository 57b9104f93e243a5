using System.Globalization;
using System.Net.Http.Headers;

namespace PgLlm.Completions;

/// <summary>
/// The model endpoint answered with a status other than 2xx (thrown by <see cref="OpenAiCompatibleChatClient"/>).
/// The worker retries 408, 429 and 5xx (after <see cref="RetryAfter"/> when the endpoint gave one) and fails
/// the job on any other status; but 401, 403 and an out-of-quota 429 (<c>insufficient_quota</c> in
/// <see cref="ResponseBody"/>) stop the endpoint without spending the job's attempt, and 408, 502, 503 and 504
/// count toward its circuit breaker (the endpoint governor, see docs/operations.md).
/// </summary>
public sealed class ModelEndpointException : Exception
{
    /// <summary>How much of the response body is kept.</summary>
    internal const int MaxBodyLength = 500;

    /// <summary>Creates the exception for an endpoint's error answer.</summary>
    /// <param name="status">The HTTP status code.</param>
    /// <param name="detail">What the endpoint said: its error message, or the start of its body.</param>
    /// <param name="retryAfter">When the endpoint asked to be called again, if it did.</param>
    /// <param name="responseBody">The start of the response body (at most 500 characters).</param>
    public ModelEndpointException(int status, string detail, TimeSpan? retryAfter = null, string? responseBody = null)
        : base(string.Create(CultureInfo.InvariantCulture, $"HTTP {status}: {detail}"))
    {
        Status = status;
        Detail = detail;
        RetryAfter = retryAfter;
        ResponseBody = responseBody;
    }

    /// <summary>The HTTP status code.</summary>
    public int Status { get; }

    /// <summary>What the endpoint said: the <c>error.message</c> of an OpenAI-style error body, else the start of the body.</summary>
    public string Detail { get; }

    /// <summary>The wait the endpoint asked for (<c>retry-after-ms</c> or <c>Retry-After</c>), or null.</summary>
    public TimeSpan? RetryAfter { get; }

    /// <summary>The first 500 characters of the response body, or null when it was empty.</summary>
    public string? ResponseBody { get; }

    /// <summary>The <c>error.code</c> (else <c>error.type</c>) of an OpenAI-style error body, e.g. <c>insufficient_quota</c> or <c>invalid_api_key</c>; null when none.</summary>
    public string? ErrorCode { get; init; }

    /// <summary>
    /// Reads a wait from <c>retry-after-ms</c> (milliseconds) or else <c>Retry-After</c> (seconds or an HTTP
    /// date; a date in the past is no wait). Null when neither is present and valid.
    /// </summary>
    internal static TimeSpan? ParseRetryAfter(string? milliseconds, string? retryAfter, DateTimeOffset now)
    {
        if (milliseconds is not null
            && double.TryParse(milliseconds, NumberStyles.Float, CultureInfo.InvariantCulture, out var ms) && ms >= 0)
        {
            return TimeSpan.FromMilliseconds(ms);
        }

        if (retryAfter is null)
        {
            return null;
        }

        if (double.TryParse(retryAfter, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds >= 0)
        {
            return TimeSpan.FromSeconds(seconds);
        }

        if (DateTimeOffset.TryParse(retryAfter, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var date))
        {
            var wait = date - now;
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }

        return null;
    }

    /// <summary>The wait an HTTP response asks for, from <c>retry-after-ms</c> or <c>Retry-After</c>.</summary>
    internal static TimeSpan? ParseRetryAfter(HttpResponseHeaders headers, DateTimeOffset now) =>
        ParseRetryAfter(
            headers.TryGetValues("retry-after-ms", out var ms) ? ms.FirstOrDefault() : null,
            headers.TryGetValues("Retry-After", out var value) ? value.FirstOrDefault() : null,
            now);
}
