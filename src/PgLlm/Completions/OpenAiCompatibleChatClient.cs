using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace PgLlm.Completions;

/// <summary>
/// An <see cref="IChatClient"/> for any OpenAI-compatible chat-completions endpoint
/// (<c>POST {baseUrl}/chat/completions</c>), written for the one request shape PgLlm sends: a few text
/// messages, optionally with image parts, and a JSON response format. It costs a fraction of the CPU per
/// call of the OpenAI SDK behind <c>AsIChatClient()</c>, which matters on the worker's hot path.
/// </summary>
/// <remarks>
/// <para>
/// Sent: <c>model</c> (<see cref="ChatOptions.ModelId"/>, else the default model), <c>messages</c> (any role
/// but <c>tool</c>; a message of one <see cref="TextContent"/> as a string, any other as parts: text, and
/// images from <see cref="UriContent"/> or <see cref="DataContent"/> as <c>image_url</c>), and from the
/// options <c>temperature</c>, <c>top_p</c>, <c>frequency_penalty</c>, <c>presence_penalty</c>, <c>seed</c>,
/// <c>stop</c>, <c>max_completion_tokens</c> and <c>response_format</c>. A JSON format with a schema becomes
/// <c>json_schema</c> with the schema adapted to OpenAI's structured-output rules (as the OpenAI adapter of
/// Microsoft.Extensions.AI does), named <see cref="ChatResponseFormatJson.SchemaName"/> or <c>result</c>, strict
/// unless <see cref="ChatOptions.AdditionalProperties"/> holds <c>"strict": false</c>; one without a schema
/// becomes <c>json_object</c>. Tools, tool modes and any other option are not sent: PgLlm uses none.
/// </para>
/// <para>
/// A JSON-schema format's part of the body is serialized once per <see cref="ChatResponseFormatJson"/>
/// instance (its schema cannot change) and reused by every call that passes the same format.
/// </para>
/// <para>
/// A status other than 2xx throws <see cref="ModelEndpointException"/>; a 2xx answer that is not a
/// chat completion throws <see cref="InvalidOperationException"/>; network errors surface as
/// <see cref="HttpRequestException"/> and cancellation as <see cref="OperationCanceledException"/>. Nothing
/// is retried here: the queue owns retries.
/// </para>
/// </remarks>
public sealed class OpenAiCompatibleChatClient : IChatClient
{
    private const int MaxPooledBuffers = 64;
    private const int MaxPooledBufferBytes = 256 * 1024;
    private const int MaxResponseBytes = 64 * 1024 * 1024;

    private static readonly JsonWriterOptions WriterOptions = new()
    {
        // The body goes to an API, not into HTML: no need to escape non-ASCII or <, >, &.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    // The response_format of a JSON-schema format, serialized once per format instance (immutable; PgLlm makes
    // one per task and every call of the task, and any clone of its options, shares it).
    private static readonly ConditionalWeakTable<ChatResponseFormatJson, SchemaFormat> SchemaFormats = [];
    private static readonly ConditionalWeakTable<ChatResponseFormatJson, SchemaFormat>.CreateValueCallback NewSchemaFormat = format => new SchemaFormat(format);

    private static readonly AIJsonSchemaTransformCache StrictSchemas = new(new AIJsonSchemaTransformOptions
    {
        DisallowAdditionalProperties = true,
        ConvertBooleanSchemas = true,
        MoveDefaultKeywordToDescription = true,
        RequireAllProperties = true,
        TransformSchemaNode = (_, node) => MoveUnsupportedKeywordsToDescription(node),
    });

    // Keywords OpenAI's structured outputs reject (with some models, or on Azure OpenAI): their content is kept as text in the description.
    private static readonly string[] UnsupportedKeywords =
    [
        "contentEncoding", "contentMediaType", "not",
        "minLength", "maxLength", "pattern", "format",
        "minimum", "maximum", "multipleOf",
        "patternProperties",
        "minItems", "maxItems",
        "unevaluatedProperties", "propertyNames", "minProperties", "maxProperties",
        "unevaluatedItems", "contains", "minContains", "maxContains", "uniqueItems",
    ];

    private static readonly JsonEncodedText Model = JsonEncodedText.Encode("model");
    private static readonly JsonEncodedText Messages = JsonEncodedText.Encode("messages");
    private static readonly JsonEncodedText Role = JsonEncodedText.Encode("role");
    private static readonly JsonEncodedText Name = JsonEncodedText.Encode("name");
    private static readonly JsonEncodedText Content = JsonEncodedText.Encode("content");
    private static readonly JsonEncodedText Type = JsonEncodedText.Encode("type");
    private static readonly JsonEncodedText Text = JsonEncodedText.Encode("text");
    private static readonly JsonEncodedText ImageUrl = JsonEncodedText.Encode("image_url");
    private static readonly JsonEncodedText Url = JsonEncodedText.Encode("url");
    private static readonly JsonEncodedText Detail = JsonEncodedText.Encode("detail");
    private static readonly JsonEncodedText Temperature = JsonEncodedText.Encode("temperature");
    private static readonly JsonEncodedText MaxCompletionTokens = JsonEncodedText.Encode("max_completion_tokens");
    private static readonly JsonEncodedText ResponseFormat = JsonEncodedText.Encode("response_format");

    private readonly HttpClient _http;
    private readonly Uri _completionsUri;
    private readonly string? _defaultModel;
    private readonly ChatClientMetadata _metadata;
    private readonly ConcurrentQueue<RequestBuffer> _buffers = new();
    private int _pooledBuffers;

    /// <summary>Creates a client for the endpoint at <paramref name="baseUrl"/>.</summary>
    /// <param name="baseUrl">The base URL, e.g. <c>https://api.openai.com/v1</c>; <c>chat/completions</c> is appended.</param>
    /// <param name="apiKey">Sent as <c>Authorization: Bearer</c>; null or empty sends no <c>Authorization</c> header.</param>
    /// <param name="defaultModel">The model asked when <see cref="ChatOptions.ModelId"/> is not set.</param>
    /// <param name="timeout">The HTTP client's timeout for one call; 100 s when null. Callers' tokens still apply.</param>
    public OpenAiCompatibleChatClient(Uri baseUrl, string? apiKey, string? defaultModel, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(baseUrl);
        if (!baseUrl.IsAbsoluteUri || (baseUrl.Scheme != Uri.UriSchemeHttp && baseUrl.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"The base URL must be an absolute http(s) URL; got '{baseUrl}'.", nameof(baseUrl));
        }

        var completions = new UriBuilder(baseUrl);
        completions.Path = completions.Path.TrimEnd('/') + "/chat/completions";
        _completionsUri = completions.Uri;
        _defaultModel = defaultModel;
        _metadata = new ChatClientMetadata("openai", baseUrl, defaultModel);
        _http = CreateHttpClient(apiKey, timeout ?? TimeSpan.FromSeconds(100));
    }

    /// <summary>
    /// The HTTP client of an endpoint's calls (and of its Batch API: <see cref="Batches.BatchApiClient"/>): the key as
    /// <c>Authorization: Bearer</c> (none when empty), PgLlm's user agent, no cookies, no redirects.
    /// </summary>
    internal static HttpClient CreateHttpClient(string? apiKey, TimeSpan timeout)
    {
        var http = new HttpClient(new SocketsHttpHandler
        {
            // Recycled now and then, so a DNS change (or a load balancer's new node) is noticed.
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            // Answers are small; decompressing them would cost more CPU than the bytes saved on the wire.
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            AllowAutoRedirect = false,
        })
        {
            Timeout = timeout,
        };
        if (!string.IsNullOrEmpty(apiKey))
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("PgLlm", typeof(OpenAiCompatibleChatClient).Assembly.GetName().Version?.ToString(3)));
        return http;
    }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var model = options?.ModelId ?? _defaultModel
            ?? throw new InvalidOperationException("No model: set ChatOptions.ModelId or the client's default model.");

        var buffer = RentBuffer();
        buffer.Write(model, messages, options);

        using var content = new ByteArrayContent(buffer.Bytes, 0, buffer.Length);
        content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, _completionsUri) { Content = content };
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        var body = await ReadBodyAsync(response.Content, cancellationToken).ConfigureAwait(false);
        try
        {
            if (!response.IsSuccessStatusCode)
            {
                throw ErrorOf(response, body.Span);
            }

            return Parse(body.Span);
        }
        finally
        {
            body.Return();

            // The request body was sent in full: its buffer can serve the next call.
            ReturnBuffer(buffer);
        }
    }

    /// <summary>
    /// Does not stream: awaits <see cref="GetResponseAsync"/> and yields the whole answer as updates
    /// (<see cref="ChatResponse.ToChatResponseUpdates"/>). PgLlm never streams.
    /// </summary>
    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages,
        ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var response = await GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        foreach (var update in response.ToChatResponseUpdates())
        {
            yield return update;
        }
    }

    /// <summary>
    /// <see cref="ChatClientMetadata"/> (provider <c>openai</c>, the base URL and the default model) for
    /// that type, this client for its own type, otherwise null.
    /// </summary>
    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is not null ? null
            : serviceType == typeof(ChatClientMetadata) ? _metadata
            : serviceType.IsInstanceOfType(this) ? this
            : null;
    }

    /// <summary>Disposes the HTTP client and its connections.</summary>
    public void Dispose()
    {
        _http.Dispose();
        while (_buffers.TryDequeue(out var buffer))
        {
            buffer.Dispose();
        }
    }

    /// <summary>Moves the keywords OpenAI's structured outputs reject into the node's description, as text.</summary>
    private static JsonNode MoveUnsupportedKeywordsToDescription(JsonNode node)
    {
        if (node is not JsonObject schema)
        {
            return node;
        }

        StringBuilder? moved = null;
        foreach (var keyword in UnsupportedKeywords)
        {
            if (schema[keyword] is { } value)
            {
                schema.Remove(keyword);
                moved = moved is null ? new StringBuilder() : moved.Append('\n');
                moved.Append(keyword).Append(": ").Append(value.ToString());
            }
        }

        if (moved is not null)
        {
            schema["description"] = schema["description"] is { } description && description.GetValueKind() == JsonValueKind.String
                ? description.GetValue<string>() + "\n" + moved
                : moved.ToString();
        }

        return node;
    }

    /// <summary>
    /// Writes a chat-completions request body: model, messages, then the options' fields. The batch tier's request
    /// lines carry the same body, so a batch asks exactly what a call would.
    /// </summary>
    internal static void WriteRequest(Utf8JsonWriter writer, string model, IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        writer.WriteStartObject();
        writer.WriteString(Model, model);
        writer.WriteStartArray(Messages);
        foreach (var message in messages)
        {
            WriteMessage(writer, message);
        }

        writer.WriteEndArray();
        if (options is not null)
        {
            WriteOptions(writer, options);
        }

        writer.WriteEndObject();
    }

    /// <summary>Writes the options PgLlm uses as request fields; the schema's part comes serialized from <see cref="SchemaFormats"/>.</summary>
    private static void WriteOptions(Utf8JsonWriter writer, ChatOptions options)
    {
        if (options.Temperature is { } temperature)
        {
            writer.WriteNumber(Temperature, temperature);
        }

        if (options.TopP is { } topP)
        {
            writer.WriteNumber("top_p", topP);
        }

        if (options.FrequencyPenalty is { } frequencyPenalty)
        {
            writer.WriteNumber("frequency_penalty", frequencyPenalty);
        }

        if (options.PresencePenalty is { } presencePenalty)
        {
            writer.WriteNumber("presence_penalty", presencePenalty);
        }

        if (options.Seed is { } seed)
        {
            writer.WriteNumber("seed", seed);
        }

        if (options.StopSequences is { Count: > 0 } stop)
        {
            writer.WriteStartArray("stop");
            foreach (var sequence in stop)
            {
                writer.WriteStringValue(sequence);
            }

            writer.WriteEndArray();
        }

        if (options.MaxOutputTokens is { } maxTokens)
        {
            writer.WriteNumber(MaxCompletionTokens, maxTokens);
        }

        switch (options.ResponseFormat)
        {
            case ChatResponseFormatText:
                writer.WritePropertyName(ResponseFormat);
                writer.WriteRawValue("""{"type":"text"}"""u8, skipInputValidation: true);
                break;
            case ChatResponseFormatJson { Schema: not null } json:
                var strict = options.AdditionalProperties?.TryGetValue("strict", out var value) is not true || value is not bool flag || flag;
                writer.WritePropertyName(ResponseFormat);
                writer.WriteRawValue(SchemaFormats.GetValue(json, NewSchemaFormat).Json(strict), skipInputValidation: true);
                break;
            case ChatResponseFormatJson:
                writer.WritePropertyName(ResponseFormat);
                writer.WriteRawValue("""{"type":"json_object"}"""u8, skipInputValidation: true);
                break;
        }
    }

    private static void WriteMessage(Utf8JsonWriter writer, ChatMessage message)
    {
        writer.WriteStartObject();
        var role = message.Role;
        if (role == ChatRole.Tool)
        {
            throw new NotSupportedException("OpenAiCompatibleChatClient sends no tool messages.");
        }

        writer.WriteString(Role, role == ChatRole.User ? "user" : role == ChatRole.System ? "system" : role == ChatRole.Assistant ? "assistant" : role.Value);
        if (message.AuthorName is { } author)
        {
            writer.WriteString(Name, author);
        }

        var contents = message.Contents;
        if (contents.Count == 1 && contents[0] is TextContent single)
        {
            writer.WriteString(Content, single.Text);
        }
        else if (contents.Count == 0)
        {
            writer.WriteString(Content, string.Empty);
        }
        else
        {
            writer.WriteStartArray(Content);
            foreach (var part in contents)
            {
                WritePart(writer, part);
            }

            writer.WriteEndArray();
        }

        writer.WriteEndObject();
    }

    private static void WritePart(Utf8JsonWriter writer, AIContent part)
    {
        string url;
        switch (part)
        {
            case TextContent text:
                writer.WriteStartObject();
                writer.WriteString(Type, "text");
                writer.WriteString(Text, text.Text);
                writer.WriteEndObject();
                return;
            case UriContent uri when uri.HasTopLevelMediaType("image"):
                url = uri.Uri.AbsoluteUri;
                break;
            case DataContent data when data.HasTopLevelMediaType("image"):
                url = data.Uri;
                break;
            default:
                throw new NotSupportedException($"OpenAiCompatibleChatClient sends text and images only, not {part.GetType().Name}.");
        }

        writer.WriteStartObject();
        writer.WriteString(Type, "image_url");
        writer.WriteStartObject(ImageUrl);
        writer.WriteString(Url, url);
        if (part.AdditionalProperties?.TryGetValue("detail", out var detail) is true && detail is string level)
        {
            writer.WriteString(Detail, level);
        }

        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    private RequestBuffer RentBuffer()
    {
        if (_buffers.TryDequeue(out var buffer))
        {
            Interlocked.Decrement(ref _pooledBuffers);
            return buffer;
        }

        return new RequestBuffer();
    }

    private void ReturnBuffer(RequestBuffer buffer)
    {
        // A body with large images is not kept: the pool holds the usual, small bodies.
        if (buffer.Bytes.Length > MaxPooledBufferBytes)
        {
            buffer.Dispose();
            return;
        }

        if (Interlocked.Increment(ref _pooledBuffers) > MaxPooledBuffers)
        {
            Interlocked.Decrement(ref _pooledBuffers);
            buffer.Dispose();
            return;
        }

        _buffers.Enqueue(buffer);
    }

    /// <summary>Reads the whole body into a rented array.</summary>
    private static async Task<PooledBody> ReadBodyAsync(HttpContent content, CancellationToken cancellationToken)
    {
        var length = content.Headers.ContentLength;
        if (length > MaxResponseBytes)
        {
            throw new InvalidOperationException($"The model endpoint's answer is {length} bytes, more than {MaxResponseBytes}.");
        }

        // One byte more than announced, so the end of the stream is usually seen without growing.
        var bytes = ArrayPool<byte>.Shared.Rent(length is { } known ? (int)known + 1 : 4096);
        var count = 0;
        try
        {
            var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                while (true)
                {
                    if (count == bytes.Length)
                    {
                        if (count >= MaxResponseBytes)
                        {
                            throw new InvalidOperationException($"The model endpoint's answer is more than {MaxResponseBytes} bytes.");
                        }

                        var larger = ArrayPool<byte>.Shared.Rent(bytes.Length * 2);
                        bytes.AsSpan(0, count).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(bytes);
                        bytes = larger;
                    }

                    var read = await stream.ReadAsync(bytes.AsMemory(count), cancellationToken).ConfigureAwait(false);
                    if (read == 0)
                    {
                        return new PooledBody(bytes, count);
                    }

                    count += read;
                }
            }
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(bytes);
            throw;
        }
    }

    /// <summary>The exception for a non-2xx answer: its status, the endpoint's error message and its requested wait.</summary>
    internal static ModelEndpointException ErrorOf(HttpResponseMessage response, ReadOnlySpan<byte> body) =>
        ErrorOf((int)response.StatusCode, body, response.ReasonPhrase, ModelEndpointException.ParseRetryAfter(response.Headers, DateTimeOffset.UtcNow));

    /// <summary>The exception for a non-2xx answer given by its status and body (a batch's error line carries both).</summary>
    internal static ModelEndpointException ErrorOf(int status, ReadOnlySpan<byte> body, string? reasonPhrase = null, TimeSpan? retryAfter = null)
    {
        var text = Encoding.UTF8.GetString(body.Length > 4 * ModelEndpointException.MaxBodyLength ? body[..(4 * ModelEndpointException.MaxBodyLength)] : body);
        var excerpt = text.Length > ModelEndpointException.MaxBodyLength ? text[..ModelEndpointException.MaxBodyLength] : text;
        var (message, code) = EndpointErrorOf(body);
        var detail = message is { Length: > 0 } ? message
            : excerpt.Trim() is { Length: > 0 } trimmed ? trimmed
            : reasonPhrase ?? "no body";
        if (detail.Length > ModelEndpointException.MaxBodyLength)
        {
            detail = detail[..ModelEndpointException.MaxBodyLength];
        }

        return new ModelEndpointException(status, detail, retryAfter, excerpt.Length > 0 ? excerpt : null) { ErrorCode = code };
    }

    /// <summary>
    /// The <c>error</c> of an OpenAI-style error body: its <c>message</c> (or the string <c>error</c>) and its
    /// <c>code</c>, else <c>type</c> (e.g. <c>insufficient_quota</c>); nulls for anything else (the caller quotes
    /// the body). A failure path, and bodies are short: one parse.
    /// </summary>
    private static (string? Message, string? Code) EndpointErrorOf(ReadOnlySpan<byte> body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var document = JsonDocument.ParseValue(ref reader);
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("error", out var error))
            {
                return (null, null);
            }

            return error.ValueKind switch
            {
                JsonValueKind.String => (error.GetString(), null),
                JsonValueKind.Object => (StringOf(error, "message"), StringOf(error, "code") ?? StringOf(error, "type")),
                _ => (null, null),
            };
        }
        catch (JsonException)
        {
            return (null, null);
        }

        static string? StringOf(JsonElement error, string name) =>
            error.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
    }

    /// <summary>Reads a chat completion: the first choice's message and finish reason, usage, id, model and creation time.</summary>
    internal static ChatResponse Parse(ReadOnlySpan<byte> body)
    {
        var completion = default(CompletionFields);
        try
        {
            ReadCompletion(body, ref completion);
        }
        catch (JsonException ex)
        {
            throw new InvalidOperationException($"The model endpoint's answer is not valid JSON ({ex.Message}): {Excerpt(body)}", ex);
        }

        if (!completion.SawChoice)
        {
            throw new InvalidOperationException("The model endpoint's answer has no choices: " + Excerpt(body));
        }

        return ToResponse(completion);
    }

    /// <summary>What <see cref="Parse"/> takes from a chat completion's JSON.</summary>
    private struct CompletionFields
    {
        public string? Id, Model, Content, Refusal, FinishReason;
        public long? Created, PromptTokens, CompletionTokens, TotalTokens, CachedTokens, ReasoningTokens;
        public bool SawChoice;
    }

    private static void ReadCompletion(ReadOnlySpan<byte> body, ref CompletionFields completion)
    {
        var reader = new Utf8JsonReader(body);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            throw new InvalidOperationException("The model endpoint's answer is not a chat completion (not a JSON object): " + Excerpt(body));
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("id"u8))
            {
                completion.Id = ReadString(ref reader);
            }
            else if (reader.ValueTextEquals("model"u8))
            {
                completion.Model = ReadString(ref reader);
            }
            else if (reader.ValueTextEquals("created"u8))
            {
                completion.Created = ReadInt64(ref reader);
            }
            else if (reader.ValueTextEquals("choices"u8))
            {
                ReadChoices(ref reader, ref completion);
            }
            else if (reader.ValueTextEquals("usage"u8))
            {
                ReadUsage(ref reader, ref completion.PromptTokens, ref completion.CompletionTokens, ref completion.TotalTokens,
                    ref completion.CachedTokens, ref completion.ReasoningTokens);
            }
            else if (reader.ValueTextEquals("error"u8))
            {
                throw new InvalidOperationException("The model endpoint answered with an error: " + Excerpt(body));
            }
            else
            {
                reader.Skip();
            }
        }
    }

    /// <summary>The first choice of <c>choices</c> (the others are skipped); anything but an array is skipped.</summary>
    private static void ReadChoices(ref Utf8JsonReader reader, ref CompletionFields completion)
    {
        reader.Read();
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return;
        }

        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (completion.SawChoice || reader.TokenType != JsonTokenType.StartObject)
            {
                reader.Skip();
                continue;
            }

            completion.SawChoice = true;
            ReadChoice(ref reader, ref completion.Content, ref completion.Refusal, ref completion.FinishReason);
        }
    }

    private static ChatResponse ToResponse(in CompletionFields completion)
    {
        var message = new ChatMessage(ChatRole.Assistant, (IList<AIContent>?)null) { MessageId = completion.Id };
        if (completion.Content is not null)
        {
            message.Contents.Add(new TextContent(completion.Content));
        }
        else if (completion.Refusal is not null)
        {
            // Kept as the text, so the answer's check quotes why the model refused.
            message.Contents.Add(new TextContent(completion.Refusal));
            (message.AdditionalProperties ??= [])["refusal"] = completion.Refusal;
        }

        var response = new ChatResponse(message)
        {
            ResponseId = completion.Id,
            ModelId = completion.Model,
            CreatedAt = completion.Created is { } seconds ? DateTimeOffset.FromUnixTimeSeconds(seconds) : null,
            FinishReason = completion.FinishReason switch
            {
                null => null,
                "stop" => ChatFinishReason.Stop,
                "length" => ChatFinishReason.Length,
                "content_filter" => ChatFinishReason.ContentFilter,
                "tool_calls" or "function_call" => ChatFinishReason.ToolCalls,
                var other => new ChatFinishReason(other),
            },
        };
        if (completion.PromptTokens is not null || completion.CompletionTokens is not null || completion.TotalTokens is not null)
        {
            response.Usage = new UsageDetails
            {
                InputTokenCount = completion.PromptTokens,
                OutputTokenCount = completion.CompletionTokens,
                TotalTokenCount = completion.TotalTokens ?? (completion.PromptTokens ?? 0) + (completion.CompletionTokens ?? 0),
                CachedInputTokenCount = completion.CachedTokens,
                ReasoningTokenCount = completion.ReasoningTokens,
            };
        }

        return response;
    }

    private static void ReadChoice(ref Utf8JsonReader reader, ref string? content, ref string? refusal, ref string? finishReason)
    {
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("finish_reason"u8))
            {
                finishReason = ReadString(ref reader);
            }
            else if (reader.ValueTextEquals("message"u8))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.StartObject)
                {
                    reader.Skip();
                    continue;
                }

                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    if (reader.ValueTextEquals("content"u8))
                    {
                        content = ReadContent(ref reader);
                    }
                    else if (reader.ValueTextEquals("refusal"u8))
                    {
                        refusal = ReadString(ref reader);
                    }
                    else
                    {
                        reader.Skip();
                    }
                }
            }
            else
            {
                reader.Skip();
            }
        }
    }

    /// <summary>A message's content: a string, or the text of an array of parts (some compatible servers send parts).</summary>
    private static string? ReadContent(ref Utf8JsonReader reader)
    {
        reader.Read();
        if (reader.TokenType == JsonTokenType.String)
        {
            return reader.GetString();
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return null;
        }

        StringBuilder? text = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                reader.Skip();
                continue;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("text"u8) && ReadString(ref reader) is { } part)
                {
                    (text ??= new StringBuilder()).Append(part);
                }
                else
                {
                    reader.Skip();
                }
            }
        }

        return text?.ToString();
    }

    private static void ReadUsage(ref Utf8JsonReader reader, ref long? prompt, ref long? completion, ref long? total, ref long? cached, ref long? reasoning)
    {
        reader.Read();
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            return;
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("prompt_tokens"u8))
            {
                prompt = ReadInt64(ref reader);
            }
            else if (reader.ValueTextEquals("completion_tokens"u8))
            {
                completion = ReadInt64(ref reader);
            }
            else if (reader.ValueTextEquals("total_tokens"u8))
            {
                total = ReadInt64(ref reader);
            }
            else if (reader.ValueTextEquals("prompt_tokens_details"u8))
            {
                cached = ReadNestedInt64(ref reader, "cached_tokens"u8) ?? cached;
            }
            else if (reader.ValueTextEquals("completion_tokens_details"u8))
            {
                reasoning = ReadNestedInt64(ref reader, "reasoning_tokens"u8) ?? reasoning;
            }
            else
            {
                reader.Skip();
            }
        }
    }

    private static long? ReadNestedInt64(ref Utf8JsonReader reader, ReadOnlySpan<byte> name)
    {
        reader.Read();
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            return null;
        }

        long? value = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals(name))
            {
                value = ReadInt64(ref reader);
            }
            else
            {
                reader.Skip();
            }
        }

        return value;
    }

    private static string? ReadString(ref Utf8JsonReader reader)
    {
        reader.Read();
        if (reader.TokenType == JsonTokenType.String)
        {
            return reader.GetString();
        }

        reader.Skip();
        return null;
    }

    private static long? ReadInt64(ref Utf8JsonReader reader)
    {
        reader.Read();
        if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var value))
        {
            return value;
        }

        reader.Skip();
        return null;
    }

    private static string Excerpt(ReadOnlySpan<byte> body)
    {
        const int max = 200;
        var text = Encoding.UTF8.GetString(body.Length > 4 * max ? body[..(4 * max)] : body);
        return text.Length <= max ? text : text[..max] + "...";
    }

    /// <summary>A JSON-schema response format's <c>response_format</c> value, strict and not, each serialized on first use.</summary>
    private sealed class SchemaFormat(ChatResponseFormatJson format)
    {
        private byte[]? _strict;
        private byte[]? _lenient;

        public byte[] Json(bool strict) => strict
            ? _strict ??= Serialize(format, strict: true)
            : _lenient ??= Serialize(format, strict: false);

        /// <summary>
        /// <c>{"type":"json_schema","json_schema":{"name":…,"schema":…,"strict":…}}</c>, the schema adapted to
        /// OpenAI's structured-output rules (every property required, no others allowed, unsupported keywords
        /// moved into the description), as the OpenAI adapter of Microsoft.Extensions.AI sends it.
        /// </summary>
        private static byte[] Serialize(ChatResponseFormatJson format, bool strict)
        {
            var buffer = new ArrayBufferWriter<byte>(1024);
            using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
            {
                writer.WriteStartObject();
                writer.WriteString("type", "json_schema");
                writer.WriteStartObject("json_schema");
                writer.WriteString("name", format.SchemaName ?? "result");
                if (format.SchemaDescription is { } description)
                {
                    writer.WriteString("description", description);
                }

                writer.WritePropertyName("schema");
                StrictSchemas.GetOrCreateTransformedSchema(format)!.Value.WriteTo(writer);
                writer.WriteBoolean("strict", strict);
                writer.WriteEndObject();
                writer.WriteEndObject();
            }

            return buffer.WrittenSpan.ToArray();
        }
    }

    /// <summary>A response body in a rented array.</summary>
    private readonly struct PooledBody(byte[] bytes, int length)
    {
        public ReadOnlySpan<byte> Span => bytes.AsSpan(0, length);

        public void Return() => ArrayPool<byte>.Shared.Return(bytes);
    }

    /// <summary>A request body's buffer and the writer that fills it, reused across calls.</summary>
    private sealed class RequestBuffer : IBufferWriter<byte>, IDisposable
    {
        private readonly Utf8JsonWriter _writer;

        public RequestBuffer()
        {
            Bytes = new byte[4096];
            _writer = new Utf8JsonWriter(this, WriterOptions);
        }

        public byte[] Bytes { get; private set; }

        public int Length { get; private set; }

        /// <summary>Writes the request body: model, messages, then the options' fields.</summary>
        public void Write(string model, IEnumerable<ChatMessage> messages, ChatOptions? options)
        {
            Length = 0;
            _writer.Reset(this);
            WriteRequest(_writer, model, messages, options);
            _writer.Flush();
        }

        public void Advance(int count) => Length += count;

        public void Dispose() => _writer.Dispose();

        public Memory<byte> GetMemory(int sizeHint = 0)
        {
            Ensure(sizeHint);
            return Bytes.AsMemory(Length);
        }

        public Span<byte> GetSpan(int sizeHint = 0)
        {
            Ensure(sizeHint);
            return Bytes.AsSpan(Length);
        }

        private void Ensure(int sizeHint)
        {
            var needed = Length + Math.Max(sizeHint, 1);
            if (needed > Bytes.Length)
            {
                var larger = new byte[Math.Max(needed, Bytes.Length * 2)];
                Bytes.AsSpan(0, Length).CopyTo(larger);
                Bytes = larger;
            }
        }
    }
}
