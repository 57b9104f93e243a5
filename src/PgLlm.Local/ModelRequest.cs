using System.Text.Json;

namespace PgLlm.Local;

/// <summary>One chat message of a recorded request.</summary>
/// <param name="Role">Message role (<c>system</c>, <c>developer</c>, <c>user</c>, <c>assistant</c>, <c>tool</c>).</param>
/// <param name="Text">Text content: the string content, or the text parts joined with a newline.</param>
/// <param name="ImageUrls">URLs (or data URIs) of <c>image_url</c> parts, in order.</param>
public sealed record ModelMessage(string Role, string Text, IReadOnlyList<string> ImageUrls);

/// <summary>A chat-completions request as received by <see cref="LocalModelServer"/>.</summary>
/// <param name="Model">The <c>model</c> field.</param>
/// <param name="Messages">The <c>messages</c> array.</param>
/// <param name="ResponseFormatType"><c>response_format.type</c> (<c>text</c>, <c>json_object</c>, <c>json_schema</c>), or null.</param>
/// <param name="SchemaName"><c>response_format.json_schema.name</c>, or null.</param>
/// <param name="Schema"><c>response_format.json_schema.schema</c>, or null.</param>
/// <param name="Strict"><c>response_format.json_schema.strict</c>, or null when absent.</param>
/// <param name="Temperature">The <c>temperature</c> field, or null.</param>
/// <param name="MaxTokens"><c>max_completion_tokens</c> or <c>max_tokens</c>, or null.</param>
/// <param name="RawBody">The request body exactly as received.</param>
/// <param name="ReceivedAt">When the server received the request.</param>
public sealed record ModelRequest(
    string Model,
    IReadOnlyList<ModelMessage> Messages,
    string? ResponseFormatType,
    string? SchemaName,
    JsonElement? Schema,
    bool? Strict,
    double? Temperature,
    int? MaxTokens,
    string RawBody,
    DateTimeOffset ReceivedAt)
{
    /// <summary>
    /// True when the request was a line of a batch (<c>POST /v1/batches</c>) rather than a
    /// <c>POST /v1/chat/completions</c> call; <see cref="RawBody"/> is then the line's <c>body</c>.
    /// </summary>
    public bool ViaBatch { get; init; }

    /// <summary>Text of all <c>user</c> messages, joined with a newline.</summary>
    public string UserText => JoinText("user") ?? string.Empty;

    /// <summary>Text of all <c>system</c> and <c>developer</c> messages joined with a newline, or null when there are none.</summary>
    public string? SystemText => JoinText("system", "developer");

    /// <summary>Text of the last <c>user</c> message, or an empty string.</summary>
    public string LastUserText => Messages.LastOrDefault(m => m.Role == "user")?.Text ?? string.Empty;

    /// <summary>Parses a chat-completions request body (the format the server accepts).</summary>
    /// <param name="rawBody">JSON request body.</param>
    /// <param name="receivedAt">Receive time to record; now when null.</param>
    /// <returns>The parsed request.</returns>
    /// <exception cref="JsonException">The body is not a JSON object with a <c>messages</c> array.</exception>
    public static ModelRequest Parse(string rawBody, DateTimeOffset? receivedAt = null)
        => ChatCompletionsProtocol.ParseRequest(rawBody, receivedAt ?? DateTimeOffset.UtcNow).Request;

    private string? JoinText(params string[] roles)
    {
        var texts = Messages.Where(m => roles.Contains(m.Role, StringComparer.Ordinal)).Select(m => m.Text).ToList();
        return texts.Count == 0 ? null : string.Join('\n', texts);
    }
}
