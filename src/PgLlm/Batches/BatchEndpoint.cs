using PgLlm.Completions;

namespace PgLlm.Batches;

/// <summary>
/// Where a task's batches go: the endpoint its model names (as <see cref="EndpointRouterChatClient"/> routes a call:
/// an endpoint's name, or <c>name/model</c>; else the default endpoint) with that endpoint's base URL and key, and the
/// model the lines ask. A batch holds one endpoint's and one model's jobs.
/// </summary>
internal sealed record BatchEndpoint(string? Name, string Model, Uri? BaseUrl, string? ApiKey)
{
    /// <summary>The endpoint and model of a task whose declared model is <paramref name="taskModel"/>.</summary>
    public static BatchEndpoint Resolve(PgLlmOptions options, string? taskModel)
    {
        var model = taskModel ?? options.Model ?? string.Empty;
        var name = EndpointRouterChatClient.EndpointOf(model, options.Endpoints.ContainsKey);
        if (name is null)
        {
            return Of(options, null, model);
        }

        var endpoint = options.Endpoints[name];
        return Of(options, name, model.Length == name.Length ? endpoint.Model ?? options.Model ?? string.Empty : model[(name.Length + 1)..]);
    }

    /// <summary>The endpoint named <paramref name="name"/> (null: the default one) asking <paramref name="model"/>.</summary>
    public static BatchEndpoint Of(PgLlmOptions options, string? name, string model)
    {
        var (baseUrl, apiKey) = name is not null && options.Endpoints.TryGetValue(name, out var endpoint)
            ? (endpoint.BaseUrl, endpoint.ApiKey)
            : (options.BaseUrl, options.ApiKey);
        return new BatchEndpoint(name, model, Uri.TryCreate(baseUrl, UriKind.Absolute, out var uri) ? uri : null, apiKey);
    }
}
