using Microsoft.Extensions.AI;
using Npgsql;
using PgLlm.Observability;

namespace PgLlm.Completions;

/// <summary>
/// PgLlm's stages for Microsoft.Extensions.AI's <see cref="ChatClientBuilder"/>. <see cref="ChatClientFactory"/>
/// assembles the default model access from them; a client registered by hand can use the same stages.
/// </summary>
public static class PgLlmChatClientBuilderExtensions
{
    /// <summary>
    /// Adds Microsoft.Extensions.AI's OpenTelemetry stage under PgLlm's source and meter name
    /// (<see cref="PgLlmMetrics.MeterName"/>): the gen_ai spans, <c>gen_ai.client.operation.duration</c> and
    /// <c>gen_ai.client.token.usage</c> of every call through it.
    /// </summary>
    public static ChatClientBuilder UsePgLlmTelemetry(this ChatClientBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.UseOpenTelemetry(sourceName: PgLlmMetrics.MeterName);
    }

    /// <summary>Adds <see cref="RateLimitingChatClient"/>: the endpoint's requests and tokens per minute, and its 429 pauses.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="options">The limits.</param>
    /// <param name="endpointName">The endpoint's name, for metrics and errors.</param>
    public static ChatClientBuilder UsePgLlmRateLimiting(this ChatClientBuilder builder, PgLlmRateLimitOptions options, string? endpointName = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(options);
        return builder.Use(inner => new RateLimitingChatClient(inner, options, endpointName));
    }

    /// <summary>
    /// Adds <see cref="EndpointRouterChatClient"/>: requests whose model names one of <paramref name="endpoints"/>
    /// go to that endpoint's client; any other goes on down the pipeline (the default endpoint).
    /// </summary>
    public static ChatClientBuilder UsePgLlmEndpoints(this ChatClientBuilder builder, IReadOnlyDictionary<string, (IChatClient Client, string? Model)> endpoints)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(endpoints);
        return endpoints.Count == 0 ? builder : builder.Use(inner => new EndpointRouterChatClient(inner, endpoints));
    }

    /// <summary>Adds <see cref="AnswerCacheChatClient"/> (the <c>llm.answer_cache</c> table) when <paramref name="options"/> enable it.</summary>
    public static ChatClientBuilder UsePgLlmAnswerCache(this ChatClientBuilder builder, NpgsqlDataSource dataSource, PgLlmAnswerCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(options);
        return options.Enabled ? builder.Use(inner => new AnswerCacheChatClient(inner, dataSource, options)) : builder;
    }
}
