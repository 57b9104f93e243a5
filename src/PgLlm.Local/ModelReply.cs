namespace PgLlm.Local;

/// <summary>What <see cref="LocalModelServer"/> answers to one request (see <see cref="LocalModelServer.Responder"/>).</summary>
/// <remarks>Create instances with <see cref="Json"/>, <see cref="Error"/> or <see cref="Raw"/>; add latency with <see cref="Delay"/> or <see cref="WithDelay"/>.</remarks>
public sealed record ModelReply
{
    private ModelReply(int statusCode)
    {
        StatusCode = statusCode;
    }

    /// <summary>HTTP status code.</summary>
    public int StatusCode { get; }

    /// <summary>Assistant message content of a normal (200) completion; null for errors and raw replies.</summary>
    public string? Content { get; private init; }

    /// <summary>Error message of an OpenAI-style error reply; null otherwise.</summary>
    public string? ErrorMessage { get; private init; }

    /// <summary>Error type of an OpenAI-style error reply (derived from the status code unless set).</summary>
    public string? ErrorType { get; init; }

    /// <summary>Body written verbatim (for <see cref="Raw"/>); null otherwise.</summary>
    public string? RawBody { get; private init; }

    /// <summary>When set, the reply carries <c>Retry-After</c> (whole seconds, rounded up) and <c>retry-after-ms</c>.</summary>
    public TimeSpan? RetryAfter { get; init; }

    /// <summary>Extra latency before this reply is sent (added to <see cref="LocalModelServer.Latency"/>).</summary>
    public TimeSpan Delay { get; init; }

    /// <summary><c>finish_reason</c> of a normal completion. Default <c>"stop"</c>.</summary>
    public string FinishReason { get; init; } = "stop";

    /// <summary>A normal 200 completion whose assistant message content is <paramref name="content"/>.</summary>
    /// <param name="content">Message content (usually a JSON document, but any text is allowed).</param>
    /// <returns>The reply.</returns>
    public static ModelReply Json(string content)
    {
        ArgumentNullException.ThrowIfNull(content);
        return new ModelReply(200) { Content = content };
    }

    /// <summary>A normal 200 completion with plain-text content (same as <see cref="Json"/>).</summary>
    /// <param name="content">Message content.</param>
    /// <returns>The reply.</returns>
    public static ModelReply Text(string content) => Json(content);

    /// <summary>An OpenAI-style error: <c>{"error":{"message":…,"type":…,"param":null,"code":…}}</c>.</summary>
    /// <param name="status">HTTP status code (for example 400, 429, 500, 503).</param>
    /// <param name="message">Error message.</param>
    /// <param name="retryAfter">Optional <c>Retry-After</c> value.</param>
    /// <returns>The reply.</returns>
    public static ModelReply Error(int status, string message, TimeSpan? retryAfter = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 100);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 599);
        ArgumentNullException.ThrowIfNull(message);
        return new ModelReply(status) { ErrorMessage = message, RetryAfter = retryAfter };
    }

    /// <summary>A reply with an arbitrary status and body (sent as <c>application/json</c>), e.g. for malformed answers.</summary>
    /// <param name="status">HTTP status code.</param>
    /// <param name="body">Body, written verbatim.</param>
    /// <returns>The reply.</returns>
    public static ModelReply Raw(int status, string body)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 100);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 599);
        ArgumentNullException.ThrowIfNull(body);
        return new ModelReply(status) { RawBody = body };
    }

    /// <summary>Returns a copy of this reply that is sent after an extra <paramref name="delay"/>.</summary>
    /// <param name="delay">Extra latency.</param>
    /// <returns>The delayed reply.</returns>
    public ModelReply WithDelay(TimeSpan delay) => this with { Delay = delay };
}
