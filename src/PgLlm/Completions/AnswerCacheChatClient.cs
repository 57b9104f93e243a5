using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Npgsql;
using PgLlm.Observability;

namespace PgLlm.Completions;

/// <summary>
/// Answers a request identical to an earlier one (model, messages, response schema, sampling settings)
/// from <c>llm.answer_cache</c> instead of calling the model; a cached answer reports zero tokens.
/// Only answers that are JSON objects are stored. Requests with content other than text, images or
/// links, or with a conversation id, are never cached. Off by default (<see cref="PgLlmAnswerCacheOptions.Enabled"/>).
/// Built on Microsoft.Extensions.AI's <see cref="CachingChatClient"/>, with the table as its store; a streamed
/// answer is stored whole, under the same key.
/// </summary>
public sealed class AnswerCacheChatClient : CachingChatClient
{
    /// <summary>The key of <see cref="ChatResponse.AdditionalProperties"/> that marks an answer read from the cache.</summary>
    private const string CacheHitProperty = "pgllm.cache_hit";

    private readonly NpgsqlDataSource _dataSource;
    private readonly PgLlmAnswerCacheOptions _options;

    /// <summary>Creates the cache in front of <paramref name="innerClient"/>.</summary>
    public AnswerCacheChatClient(IChatClient innerClient, NpgsqlDataSource dataSource, PgLlmAnswerCacheOptions options)
        : base(innerClient)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(options);
        _dataSource = dataSource;
        _options = options;
    }

    /// <inheritdoc />
    protected override bool EnableCaching(IEnumerable<ChatMessage> messages, ChatOptions? options) =>
        base.EnableCaching(messages, options) && messages.All(m => m.Contents.All(c => c is TextContent or DataContent or UriContent));

    /// <inheritdoc />
    protected override string GetCacheKey(IEnumerable<ChatMessage> messages, ChatOptions? options, params ReadOnlySpan<object?> additionalValues) =>
        Key(messages, options) ?? throw new InvalidOperationException("The request holds content the answer cache cannot key.");

    /// <inheritdoc />
    protected override async Task<ChatResponse?> ReadCacheAsync(string key, CancellationToken cancellationToken)
    {
        await using var lookup = _dataSource.CreateCommand(
            "UPDATE llm.answer_cache SET hits = hits + 1, last_hit_at = now() " +
            "WHERE key = $1 AND ($2::float8 IS NULL OR created_at > now() - make_interval(secs => $2)) RETURNING answer, model");
        lookup.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        lookup.Parameters.Add(new NpgsqlParameter { Value = (object?)_options.TimeToLive?.TotalSeconds ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Double });
        await using var reader = await lookup.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            PgLlmMetrics.RecordCache(hit: false);
            return null;
        }

        PgLlmMetrics.RecordCache(hit: true);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, reader.GetString(0)))
        {
            ModelId = reader.IsDBNull(1) ? null : reader.GetString(1),
            Usage = new UsageDetails { InputTokenCount = 0, OutputTokenCount = 0, TotalTokenCount = 0 },
            AdditionalProperties = new AdditionalPropertiesDictionary { [CacheHitProperty] = true },
        };
    }

    /// <summary>Whether <paramref name="response"/> was read from the answer cache rather than asked of the model.</summary>
    internal static bool IsCacheHit(ChatResponse response) =>
        response.AdditionalProperties?.TryGetValue(CacheHitProperty, out var hit) == true && hit is true;

    /// <inheritdoc />
    protected override async Task<IReadOnlyList<ChatResponseUpdate>?> ReadCacheStreamingAsync(string key, CancellationToken cancellationToken) =>
        (await ReadCacheAsync(key, cancellationToken).ConfigureAwait(false))?.ToChatResponseUpdates();

    /// <inheritdoc />
    protected override async Task WriteCacheAsync(string key, ChatResponse value, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (!IsJsonObject(value.Text))
        {
            return;
        }

        await using var store = _dataSource.CreateCommand(
            "INSERT INTO llm.answer_cache (key, model, answer) VALUES ($1, $2, $3) " +
            "ON CONFLICT (key) DO UPDATE SET answer = EXCLUDED.answer, created_at = now()");
        store.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        store.Parameters.Add(new NpgsqlParameter { Value = (object?)value.ModelId ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        store.Parameters.Add(new NpgsqlParameter<string> { TypedValue = value.Text });
        await store.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override Task WriteCacheStreamingAsync(string key, IReadOnlyList<ChatResponseUpdate> value, CancellationToken cancellationToken) =>
        WriteCacheAsync(key, value.ToChatResponse(), cancellationToken);

    /// <summary>A SHA-256 of everything that shapes the answer; null when the request holds content that cannot be keyed.</summary>
    internal static string? Key(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        var request = new JsonObject
        {
            ["model"] = options?.ModelId,
            ["temperature"] = options?.Temperature,
            ["topP"] = options?.TopP,
            ["maxOutputTokens"] = options?.MaxOutputTokens,
            ["seed"] = options?.Seed,
            ["schema"] = options?.ResponseFormat is ChatResponseFormatJson json
                ? new JsonObject { ["name"] = json.SchemaName, ["schema"] = json.Schema?.GetRawText() }
                : options?.ResponseFormat?.GetType().Name,
        };
        var list = new JsonArray();
        foreach (var message in messages)
        {
            var contents = new JsonArray();
            foreach (var content in message.Contents)
            {
                switch (content)
                {
                    case TextContent text:
                        contents.Add(new JsonObject { ["text"] = text.Text });
                        break;
                    case DataContent data:
                        contents.Add(new JsonObject { ["media"] = data.MediaType, ["sha256"] = Convert.ToHexString(SHA256.HashData(data.Data.Span)) });
                        break;
                    case UriContent uri:
                        contents.Add(new JsonObject { ["media"] = uri.MediaType, ["uri"] = uri.Uri.ToString() });
                        break;
                    default:
                        return null;
                }
            }

            list.Add(new JsonObject { ["role"] = message.Role.Value, ["contents"] = contents });
        }

        request["messages"] = list;
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(request.ToJsonString())));
    }

    private static bool IsJsonObject(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        try
        {
            using var document = JsonDocument.Parse(text);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
