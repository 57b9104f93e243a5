using Microsoft.Extensions.AI;

namespace PgLlm.Completions;

/// <summary>
/// Sends each request to the endpoint its model names: a request whose model is a configured endpoint's
/// name goes to that endpoint with the endpoint's model; <c>name/model</c> goes to that endpoint with
/// <c>model</c>; any other model goes to the default endpoint unchanged. Each endpoint keeps its own
/// rate limits and 429 pause, so a throttled endpoint does not pause the others.
/// </summary>
public sealed class EndpointRouterChatClient : IChatClient
{
    private readonly IChatClient _defaultClient;
    private readonly IReadOnlyDictionary<string, (IChatClient Client, string? Model)> _endpoints;

    /// <summary>Creates the router.</summary>
    /// <param name="defaultClient">The client of the default endpoint.</param>
    /// <param name="endpoints">The named endpoints: their client and the model asked when a task names only the endpoint.</param>
    public EndpointRouterChatClient(IChatClient defaultClient, IReadOnlyDictionary<string, (IChatClient Client, string? Model)> endpoints)
    {
        ArgumentNullException.ThrowIfNull(defaultClient);
        ArgumentNullException.ThrowIfNull(endpoints);
        _defaultClient = defaultClient;
        _endpoints = endpoints;
    }

    /// <inheritdoc />
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (client, routed) = Route(options);
        return client.GetResponseAsync(messages, routed, cancellationToken);
    }

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (client, routed) = Route(options);
        return client.GetStreamingResponseAsync(messages, routed, cancellationToken);
    }

    /// <summary>
    /// This router, or a service of the default endpoint's client; with a configured endpoint's name as
    /// <paramref name="serviceKey"/>, a service of that endpoint's client (e.g. its <see cref="RateLimitingChatClient"/>).
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is string name && _endpoints.TryGetValue(name, out var endpoint))
        {
            return endpoint.Client.GetService(serviceType);
        }

        return serviceKey is null && serviceType.IsInstanceOfType(this) ? this : _defaultClient.GetService(serviceType, serviceKey);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _defaultClient.Dispose();
        foreach (var (client, _) in _endpoints.Values)
        {
            client.Dispose();
        }
    }

    /// <summary>The endpoint name and model a requested model resolves to (endpoint null: the default endpoint).</summary>
    internal (string? Endpoint, string? Model) Resolve(string? model)
    {
        var endpoint = EndpointOf(model, _endpoints.ContainsKey);
        return endpoint is null ? (null, model)
            : endpoint.Length == model!.Length ? (endpoint, _endpoints[endpoint].Model)
            : (endpoint, model[(endpoint.Length + 1)..]);
    }

    /// <summary>
    /// The named endpoint a task's model is sent to: the model itself when it names an endpoint, the part
    /// before the first <c>/</c> when that names one; null for the default endpoint.
    /// </summary>
    internal static string? EndpointOf(string? model, Func<string, bool> isEndpoint)
    {
        if (model is null)
        {
            return null;
        }

        if (isEndpoint(model))
        {
            return model;
        }

        var slash = model.IndexOf('/', StringComparison.Ordinal);
        return slash > 0 && isEndpoint(model[..slash]) ? model[..slash] : null;
    }

    private (IChatClient Client, ChatOptions? Options) Route(ChatOptions? options)
    {
        var (endpoint, model) = Resolve(options?.ModelId);
        if (endpoint is null)
        {
            return (_defaultClient, options);
        }

        var routed = options!.Clone();
        routed.ModelId = model;
        return (_endpoints[endpoint].Client, routed);
    }
}
