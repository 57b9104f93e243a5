using System.ClientModel;
using System.Globalization;
using Npgsql;
using PgLlm.Completions;

namespace PgLlm.Failures;

/// <summary>Decides what a failed attempt was, and so whether and when it is retried.</summary>
internal static class FailureClassifier
{
    public static Failure Classify(Exception exception) => exception switch
    {
        InvalidAnswerException invalid => new(FailureKind.Invalid, "invalid answer: " + invalid.Message, null),
        PromptTooLargeException tooLarge => new(FailureKind.Permanent, tooLarge.Message, null),
        InvalidInputException input => new(FailureKind.Permanent, "invalid input: " + input.Message, null),
        TimeoutException timeout => new(FailureKind.Transient, "timeout: " + timeout.Message, null),
        // Data exceptions (22xxx) and constraint violations (23xxx) on write-back mean the answer does
        // not fit the columns: an invalid answer, not a database outage.
        PostgresException { SqlState: [ '2', '2' or '3', ..] } pg =>
            new(FailureKind.Invalid, $"the answer does not fit the columns: {pg.MessageText} ({pg.SqlState})", null),
        NpgsqlException db => new(FailureKind.Transient, "database error: " + db.Message, null),
        HttpRequestException http => new(FailureKind.Transient, "model endpoint unreachable: " + http.Message, null),
        ModelEndpointException endpoint => FromStatus(endpoint.Status, endpoint.Detail, endpoint.RetryAfter),
        // A user-supplied OpenAI SDK client reports statuses this way.
        ClientResultException client => FromStatus(client),
        _ => new(FailureKind.Transient, $"{exception.GetType().Name}: {exception.Message}", null),
    };

    /// <summary>What <paramref name="exception"/> says about the endpoint rather than the job (see <see cref="EndpointFault"/>).</summary>
    public static EndpointFault EndpointFaultOf(Exception exception) => exception switch
    {
        TimeoutException => EndpointFault.Outage,
        HttpRequestException { StatusCode: null } => EndpointFault.Outage,
        HttpRequestException { StatusCode: { } code } => FaultOf((int)code, exception.Message),
        ModelEndpointException endpoint => FaultOf(endpoint.Status, endpoint.ErrorCode + " " + (endpoint.ResponseBody ?? endpoint.Detail)),
        ClientResultException { Status: 0 } => EndpointFault.Outage,
        ClientResultException client => FaultOf(client.Status, client.Message),
        _ => EndpointFault.None,
    };

    /// <summary>The provider's reason for an endpoint fault, for the endpoint's state: e.g. <c>unauthorized: Incorrect API key provided</c>.</summary>
    public static string EndpointReason(EndpointFault fault, Exception exception)
    {
        var detail = exception switch
        {
            ModelEndpointException endpoint => string.Create(CultureInfo.InvariantCulture, $"HTTP {endpoint.Status}: {FirstLine(endpoint.Detail)}"),
            _ => Classify(exception).Message,
        };
        return fault switch
        {
            EndpointFault.Unauthorized => "unauthorized: " + detail,
            EndpointFault.Quota => "quota exceeded: " + detail,
            _ => detail,
        };
    }

    /// <summary>Whether an HTTP 429's body speaks of quota or billing rather than of a rate.</summary>
    internal static bool IsQuota(string? body) =>
        body is not null
        && (body.Contains("insufficient_quota", StringComparison.OrdinalIgnoreCase)
            || body.Contains("quota_exceeded", StringComparison.OrdinalIgnoreCase)
            || body.Contains("billing", StringComparison.OrdinalIgnoreCase)
            || body.Contains("exceeded your current quota", StringComparison.OrdinalIgnoreCase));

    private static EndpointFault FaultOf(int status, string? body) => status switch
    {
        401 or 403 => EndpointFault.Unauthorized,
        429 when IsQuota(body) => EndpointFault.Quota,
        // The endpoint (or the gateway before it) is down or overloaded. A plain 500 is left to the job: a
        // request of its own can make a server fail, and a poison job must not hold up the endpoint.
        408 or 502 or 503 or 504 or 529 => EndpointFault.Outage,
        _ => EndpointFault.None,
    };

    private static Failure FromStatus(ClientResultException exception) =>
        exception.Status == 0
            ? new(FailureKind.Transient, "model endpoint unreachable: " + FirstLine(exception.Message), null)
            : FromStatus(exception.Status, exception.Message, RetryAfter(exception));

    /// <summary>408, 429 and 5xx are retried (after the endpoint's Retry-After, if any); any other status fails the job.</summary>
    private static Failure FromStatus(int status, string detail, TimeSpan? retryAfter)
    {
        var message = $"model endpoint returned HTTP {status}: {FirstLine(detail)}";
        var transient = status is 408 or 429 or >= 500;
        return new(transient ? FailureKind.Transient : FailureKind.Permanent, message, transient ? retryAfter : null);
    }

    /// <summary>Reads <c>retry-after-ms</c> or <c>Retry-After</c> (seconds or an HTTP date) of the SDK's failed response.</summary>
    internal static TimeSpan? RetryAfter(ClientResultException exception)
    {
        var headers = exception.GetRawResponse()?.Headers;
        if (headers is null)
        {
            return null;
        }

        return ModelEndpointException.ParseRetryAfter(
            headers.TryGetValue("retry-after-ms", out var milliseconds) ? milliseconds : null,
            headers.TryGetValue("Retry-After", out var value) ? value : null,
            DateTimeOffset.UtcNow);
    }

    private static string FirstLine(string text)
    {
        var newline = text.IndexOfAny(['\r', '\n']);
        return newline < 0 ? text : text[..newline];
    }
}
