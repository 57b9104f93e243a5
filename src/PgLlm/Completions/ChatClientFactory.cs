using Microsoft.Extensions.AI;
using Npgsql;
using PgLlm.Observability;

namespace PgLlm.Completions;

/// <summary>Builds the default <see cref="IChatClient"/>: any OpenAI-compatible chat-completions endpoint.</summary>
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
        var client = Create(options);
        if (options.Endpoints.Count > 0)
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
                    throw new InvalidOperationException($"PgLlm:Endpoints:{name}: {ex.Message}", ex);
                }
            }

            client = new EndpointRouterChatClient(client, endpoints);
        }

        return options.AnswerCache.Enabled && dataSource is not null
            ? new AnswerCacheChatClient(client, dataSource, options.AnswerCache)
            : client;
    }

    /// <summary>Creates a client for <paramref name="options"/>' base URL, API key and model.</summary>
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
        // Metered inside the limiter, so durations are the endpoint's, not the time spent waiting for a permit.
        return new RateLimitingChatClient(new MeteredChatClient(client), options.RateLimit, endpoint.Authority);
    }
}
