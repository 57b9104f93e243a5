using System.Buffers;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>A parsed request plus the transport-level flags that are not part of <see cref="ModelRequest"/>.</summary>
internal sealed record ParsedChatRequest(ModelRequest Request, bool Stream, bool IncludeUsage);

/// <summary>Reads and writes the OpenAI chat-completions wire format.</summary>
internal static class ChatCompletionsProtocol
{
    public static ParsedChatRequest ParseRequest(string rawBody, DateTimeOffset receivedAt)
    {
        using var document = JsonDocument.Parse(rawBody);
        return ParseRequest(document.RootElement, rawBody, receivedAt, viaBatch: false);
    }

    /// <summary>Parses an already parsed request body; <paramref name="rawBody"/> is its text as recorded.</summary>
    public static ParsedChatRequest ParseRequest(JsonElement root, string rawBody, DateTimeOffset receivedAt, bool viaBatch)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new JsonException("The request body must be a JSON object.");
        }

        if (!root.TryGetProperty("messages", out var messagesElement) || messagesElement.ValueKind != JsonValueKind.Array)
        {
            throw new JsonException("The request body must contain a 'messages' array.");
        }

        var messages = new List<ModelMessage>();
        foreach (var message in messagesElement.EnumerateArray())
        {
            messages.Add(ParseMessage(message));
        }

        string? formatType = null;
        string? schemaName = null;
        JsonElement? schema = null;
        bool? strict = null;
        if (root.TryGetProperty("response_format", out var format) && format.ValueKind == JsonValueKind.Object)
        {
            formatType = GetString(format, "type");
            if (format.TryGetProperty("json_schema", out var jsonSchema) && jsonSchema.ValueKind == JsonValueKind.Object)
            {
                schemaName = GetString(jsonSchema, "name");
                if (jsonSchema.TryGetProperty("schema", out var schemaElement) && schemaElement.ValueKind != JsonValueKind.Null)
                {
                    schema = schemaElement.Clone();
                }

                if (jsonSchema.TryGetProperty("strict", out var strictElement) && strictElement.ValueKind is JsonValueKind.True or JsonValueKind.False)
                {
                    strict = strictElement.GetBoolean();
                }
            }
        }

        double? temperature = root.TryGetProperty("temperature", out var temperatureElement) && temperatureElement.ValueKind == JsonValueKind.Number
            ? temperatureElement.GetDouble()
            : null;
        var maxTokens = GetInt(root, "max_completion_tokens") ?? GetInt(root, "max_tokens");
        var stream = root.TryGetProperty("stream", out var streamElement) && streamElement.ValueKind == JsonValueKind.True;
        var includeUsage = root.TryGetProperty("stream_options", out var streamOptions)
            && streamOptions.ValueKind == JsonValueKind.Object
            && streamOptions.TryGetProperty("include_usage", out var includeUsageElement)
            && includeUsageElement.ValueKind == JsonValueKind.True;

        var request = new ModelRequest(
            GetString(root, "model") ?? string.Empty,
            messages,
            formatType,
            schemaName,
            schema,
            strict,
            temperature,
            maxTokens,
            rawBody,
            receivedAt)
        {
            ViaBatch = viaBatch,
        };
        return new ParsedChatRequest(request, stream, includeUsage);
    }

    public static int PromptTokens(ModelRequest request)
        => DeterministicModel.CountTokens(string.Concat(request.Messages.Select(m => m.Text)));

    public static byte[] Completion(string id, long created, ModelRequest request, ModelReply reply)
        => Write(writer => WriteCompletion(writer, id, created, request, reply));

    /// <summary>Writes the <c>chat.completion</c> object of a normal reply (also used inside batch output lines).</summary>
    public static void WriteCompletion(Utf8JsonWriter writer, string id, long created, ModelRequest request, ModelReply reply)
    {
        var content = reply.Content ?? string.Empty;
        var promptTokens = PromptTokens(request);
        var completionTokens = DeterministicModel.CountTokens(content);
        writer.WriteStartObject();
        writer.WriteString("id", id);
        writer.WriteString("object", "chat.completion");
        writer.WriteNumber("created", created);
        writer.WriteString("model", request.Model);
        writer.WriteStartArray("choices");
        writer.WriteStartObject();
        writer.WriteNumber("index", 0);
        writer.WriteStartObject("message");
        writer.WriteString("role", "assistant");
        writer.WriteString("content", content);
        writer.WriteNull("refusal");
        writer.WriteEndObject();
        writer.WriteString("finish_reason", reply.FinishReason);
        writer.WriteNull("logprobs");
        writer.WriteEndObject();
        writer.WriteEndArray();
        WriteUsage(writer, promptTokens, completionTokens);
        writer.WriteNull("system_fingerprint");
        writer.WriteEndObject();
    }

    /// <summary>The SSE events (without the <c>data: </c> framing) of a streamed completion, ending with <c>[DONE]</c>.</summary>
    public static IEnumerable<byte[]> StreamChunks(string id, long created, ModelRequest request, ModelReply reply, bool includeUsage)
    {
        var content = reply.Content ?? string.Empty;
        yield return Chunk(id, created, request.Model, writer =>
        {
            writer.WriteString("role", "assistant");
            writer.WriteString("content", string.Empty);
        }, finishReason: null);

        const int pieceLength = 16;
        var offset = 0;
        while (offset < content.Length)
        {
            var length = Math.Min(pieceLength, content.Length - offset);
            if (offset + length < content.Length && char.IsHighSurrogate(content[offset + length - 1]))
            {
                length++; // never split a surrogate pair
            }

            var piece = content.Substring(offset, length);
            offset += length;
            yield return Chunk(id, created, request.Model, writer => writer.WriteString("content", piece), finishReason: null);
        }

        yield return Chunk(id, created, request.Model, _ => { }, reply.FinishReason);

        if (includeUsage)
        {
            yield return Write(writer =>
            {
                WriteChunkHeader(writer, id, created, request.Model);
                writer.WriteStartArray("choices");
                writer.WriteEndArray();
                WriteUsage(writer, PromptTokens(request), DeterministicModel.CountTokens(content));
                writer.WriteEndObject();
            });
        }

        yield return "[DONE]"u8.ToArray();
    }

    public static byte[] ErrorBody(int status, string message, string? type, string? param = null)
        => Write(writer => WriteErrorBody(writer, status, message, type, param));

    /// <summary>Writes an OpenAI error body <c>{"error":{"message","type","param","code"}}</c>.</summary>
    public static void WriteErrorBody(Utf8JsonWriter writer, int status, string message, string? type, string? param = null)
    {
        writer.WriteStartObject();
        writer.WriteStartObject("error");
        writer.WriteString("message", message);
        writer.WriteString("type", type ?? ErrorTypeFor(status));
        WriteNullableString(writer, "param", param);
        WriteNullableString(writer, "code", ErrorCodeFor(status));
        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    /// <summary>Writes a string property, or null when <paramref name="value"/> is null.</summary>
    public static void WriteNullableString(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is null)
        {
            writer.WriteNull(name);
        }
        else
        {
            writer.WriteString(name, value);
        }
    }

    public static byte[] ModelList(IEnumerable<string> models, long created)
        => Write(writer =>
        {
            writer.WriteStartObject();
            writer.WriteString("object", "list");
            writer.WriteStartArray("data");
            foreach (var model in models)
            {
                writer.WriteStartObject();
                writer.WriteString("id", model);
                writer.WriteString("object", "model");
                writer.WriteNumber("created", created);
                writer.WriteString("owned_by", "pgllm-local");
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        });

    private static string ErrorTypeFor(int status) => status switch
    {
        400 or 404 or 409 or 413 or 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    private static string? ErrorCodeFor(int status) => status switch
    {
        401 => "invalid_api_key",
        429 => "rate_limit_exceeded",
        _ => null,
    };

    private static byte[] Chunk(string id, long created, string model, Action<Utf8JsonWriter> writeDelta, string? finishReason)
        => Write(writer =>
        {
            WriteChunkHeader(writer, id, created, model);
            writer.WriteStartArray("choices");
            writer.WriteStartObject();
            writer.WriteNumber("index", 0);
            writer.WriteStartObject("delta");
            writeDelta(writer);
            writer.WriteEndObject();
            writer.WriteNull("logprobs");
            if (finishReason is null)
            {
                writer.WriteNull("finish_reason");
            }
            else
            {
                writer.WriteString("finish_reason", finishReason);
            }

            writer.WriteEndObject();
            writer.WriteEndArray();
            writer.WriteEndObject();
        });

    private static void WriteChunkHeader(Utf8JsonWriter writer, string id, long created, string model)
    {
        writer.WriteStartObject();
        writer.WriteString("id", id);
        writer.WriteString("object", "chat.completion.chunk");
        writer.WriteNumber("created", created);
        writer.WriteString("model", model);
    }

    private static void WriteUsage(Utf8JsonWriter writer, int promptTokens, int completionTokens)
    {
        writer.WriteStartObject("usage");
        writer.WriteNumber("prompt_tokens", promptTokens);
        writer.WriteNumber("completion_tokens", completionTokens);
        writer.WriteNumber("total_tokens", promptTokens + completionTokens);
        writer.WriteEndObject();
    }

    public static byte[] Write(Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            write(writer);
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static ModelMessage ParseMessage(JsonElement message)
    {
        if (message.ValueKind != JsonValueKind.Object)
        {
            throw new JsonException("Every element of 'messages' must be an object.");
        }

        var role = GetString(message, "role") ?? string.Empty;
        var images = new List<string>();
        var text = string.Empty;
        if (message.TryGetProperty("content", out var content))
        {
            switch (content.ValueKind)
            {
                case JsonValueKind.String:
                    text = content.GetString() ?? string.Empty;
                    break;
                case JsonValueKind.Array:
                    var texts = new List<string>();
                    foreach (var part in content.EnumerateArray())
                    {
                        if (part.ValueKind == JsonValueKind.String)
                        {
                            texts.Add(part.GetString() ?? string.Empty);
                            continue;
                        }

                        if (part.ValueKind != JsonValueKind.Object)
                        {
                            continue;
                        }

                        switch (GetString(part, "type"))
                        {
                            case "text":
                                texts.Add(GetString(part, "text") ?? string.Empty);
                                break;
                            case "image_url" when part.TryGetProperty("image_url", out var imageUrl):
                                var url = imageUrl.ValueKind == JsonValueKind.String ? imageUrl.GetString() : GetString(imageUrl, "url");
                                if (url is not null)
                                {
                                    images.Add(url);
                                }

                                break;
                        }
                    }

                    text = string.Join('\n', texts);
                    break;
            }
        }

        return new ModelMessage(role, text, images);
    }

    private static string? GetString(JsonElement element, string name)
        => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : null;

    private static int? GetInt(JsonElement element, string name)
        => element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var number)
            ? number
            : null;
}
