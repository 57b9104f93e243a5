using Microsoft.Extensions.AI;
using Npgsql;

namespace PgLlm.Completions;

/// <summary>
/// Builds the default <see cref="IChatClient"/> for any OpenAI-compatible chat-completions endpoint, as a
/// Microsoft.Extensions.AI <see cref="ChatClientBuilder"/> pipeline of PgLlm's stages
/// (<see cref="PgLlmChatClientBuilderExtensions"/>), outermost first: the answer cache, the router to the named
/// endpoints, then per endpoint its rate limits and the OpenTelemetry stage around the HTTP client.
/// </summary>
public static class ChatClientFactory
{
    /// <summary>
    /// Creates a client for <paramref name="options"/>' base URL, API key and model, with its rate limits, a
    /// router to the named endpoints (<see cref="PgLlmOptions.Endpoints"/>) and, when enabled and
    /// <paramref name="dataSource"/> is given, the answer cache in front.
    /// </summary>
    /// <exception cref="InvalidOperationException">The base URL or model is missing or malformed.</exception>
    public static IChatClient Create(PgLlmOptions options, NpgsqlDataSource? dataSource)
    {
        ArgumentNullException.ThrowIfNull(options);
        var builder = Create(options).AsBuilder();
        var endpoints = CreateEndpoints(options);
        if (dataSource is not null)
        {
            builder.UsePgLlmAnswerCache(dataSource, options.AnswerCache);
        }

        return builder.UsePgLlmEndpoints(endpoints).Build();
    }

    /// <summary>Creates a client for <paramref name="options"/>' base URL, API key and model, with its rate limits.</summary>
    /// <exception cref="InvalidOperationException">The base URL or model is missing or malformed.</exception>
    public static IChatClient Create(PgLlmOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.BaseUrl) || !Uri.TryCreate(options.BaseUrl, UriKind.Absolute, out var endpoint)
            || (endpoint.Scheme != Uri.UriSchemeHttp && endpoint.Scheme != Uri.UriSchemeHttps))
        {
            throw new InvalidOperationException(
                $"PgLlm needs the model endpoint's base URL (PgLlm:BaseUrl or PGLLM_BASE_URL), an absolute http(s) URL such as https://api.openai.com/v1; got '{options.BaseUrl}'.");
        }

        if (string.IsNullOrWhiteSpace(options.Model))
        {
            throw new InvalidOperationException("PgLlm needs a model name (PgLlm:Model or PGLLM_MODEL).");
        }

        // PgLlm's own client, not the OpenAI SDK: it sends the one request shape PgLlm needs at a fraction of the
        // CPU per call. It never retries (the queue owns retries: attempts, backoff, dead letters); the worker's
        // token bounds each call by the model timeout, the HTTP timeout is only a backstop.
        var client = new OpenAiCompatibleChatClient(endpoint, options.ApiKey, options.Model, options.Worker.ModelTimeout + TimeSpan.FromSeconds(5));
        // Telemetry inside the limiter, so durations are the endpoint's, not the time spent waiting for a permit.
        return client.AsBuilder()
            .UsePgLlmRateLimiting(options.RateLimit, endpoint.Authority)
            .UsePgLlmTelemetry()
            .Build();
    }

    /// <summary>
    /// The worker's model access: <paramref name="client"/> as it is when it already carries an OpenTelemetry stage
    /// (every client this factory builds does), else wrapped in <see cref="PgLlmChatClientBuilderExtensions.UsePgLlmTelemetry"/>
    /// so that the <c>gen_ai.*</c> metrics of meter <c>PgLlm</c> count its calls too. The wrapper does not own
    /// <paramref name="client"/>: it is never disposed through it.
    /// </summary>
    public static IChatClient WithTelemetry(IChatClient client)
    {
        ArgumentNullException.ThrowIfNull(client);
        return client.GetService<OpenTelemetryChatClient>() is not null
            ? client
            : new ChatClientBuilder(new NotOwnedChatClient(client)).UsePgLlmTelemetry().Build();
    }

    private static Dictionary<string, (IChatClient, string?)> CreateEndpoints(PgLlmOptions options)
    {
        var endpoints = new Dictionary<string, (IChatClient, string?)>(StringComparer.Ordinal);
        foreach (var (name, endpoint) in options.Endpoints)
        {
            var endpointOptions = new PgLlmOptions
            {
                BaseUrl = endpoint.BaseUrl,
                ApiKey = endpoint.ApiKey,
                Model = endpoint.Model ?? options.Model,
                Worker = options.Worker,
                RateLimit = endpoint.RateLimit,
            };
            try
            {
                endpoints[name] = (Create(endpointOptions), endpoint.Model);
            }
            catch (InvalidOperationException ex)
            {
                foreach (var (created, _) in endpoints.Values)
                {
                    created.Dispose();
                }

                throw new InvalidOperationException($"PgLlm:Endpoints:{name}: {ex.Message}", ex);
            }
        }

        return endpoints;
    }

    /// <summary>Passes every call through but leaves disposing the inner client to its owner.</summary>
    private sealed class NotOwnedChatClient(IChatClient innerClient) : IChatClient
    {
        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            innerClient.GetResponseAsync(messages, options, cancellationToken);

        public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            innerClient.GetStreamingResponseAsync(messages, options, cancellationToken);

        public object? GetService(Type serviceType, object? serviceKey = null) => innerClient.GetService(serviceType, serviceKey);

        public void Dispose()
        {
            // Not ours to dispose.
        }
    }
}
