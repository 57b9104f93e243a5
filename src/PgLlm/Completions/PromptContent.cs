using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using PgLlm.Failures;
using PgLlm.Queue;

namespace PgLlm.Completions;

/// <summary>
/// Builds the user message of a job: the rendered template, with every image placeholder sent as an
/// image content part at its position (a URL as <see cref="UriContent"/>, bytea or a data URL as
/// <see cref="DataContent"/>), never as text.
/// </summary>
internal static class PromptContent
{
    /// <summary>
    /// The user message's parts. Throws <see cref="PromptTooLargeException"/> when the rendered prompt (the
    /// text with each image value counted as written in the row) exceeds <paramref name="maxPromptBytes"/>
    /// UTF-8 bytes, before any image is decoded and without rendering the prompt a second time.
    /// </summary>
    public static List<AIContent> Build(TaskDefinition task, JsonElement values, int maxPromptBytes = int.MaxValue)
    {
        // Text runs and image values, in prompt order.
        var pieces = new List<(string Text, string? ImageColumn)>();
        var text = new StringBuilder();
        foreach (var (literal, placeholder) in task.Prompt.Parts)
        {
            if (placeholder is null)
            {
                text.Append(literal);
                continue;
            }

            var value = values.ValueKind == JsonValueKind.Object && values.TryGetProperty(placeholder, out var v) ? v : default;
            if (!task.ImageColumns.Contains(placeholder, StringComparer.Ordinal))
            {
                Templates.PromptTemplate.AppendValue(text, value);
                continue;
            }

            if (value.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
            {
                continue;
            }

            if (text.Length > 0)
            {
                pieces.Add((text.ToString(), null));
                text.Clear();
            }

            pieces.Add((value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText(), placeholder));
        }

        if (text.Length > 0 || pieces.Count == 0)
        {
            pieces.Add((text.ToString(), null));
        }

        PromptTooLargeException.ThrowIfOver(pieces.ConvertAll(p => p.Text), maxPromptBytes);
        var contents = new List<AIContent>(pieces.Count);
        foreach (var (pieceText, imageColumn) in pieces)
        {
            contents.Add(imageColumn is null ? new TextContent(pieceText) : Image(imageColumn, pieceText));
        }

        return contents;
    }

    /// <summary>An image column's value: an http(s) URL, a data URL, or bytea (which reaches JSON as <c>\x</c> hex).</summary>
    internal static AIContent Image(string column, string text)
    {
        if (text.StartsWith("\\x", StringComparison.Ordinal))
        {
            byte[] bytes;
            try
            {
                bytes = Convert.FromHexString(text.AsSpan(2));
            }
            catch (FormatException)
            {
                throw new InvalidInputException($"image column \"{column}\" holds malformed bytea");
            }

            return new DataContent(bytes, MediaTypeOf(bytes)
                ?? throw new InvalidInputException($"image column \"{column}\" holds {bytes.Length} bytes that are not a PNG, JPEG, GIF or WebP image"));
        }

        if (text.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                var data = new DataContent(text);
                return data.HasTopLevelMediaType("image")
                    ? data
                    : throw new InvalidInputException($"image column \"{column}\" holds a data URL of type {data.MediaType}, not an image");
            }
            catch (FormatException)
            {
                throw new InvalidInputException($"image column \"{column}\" holds a malformed data URL");
            }
        }

        if (Uri.TryCreate(text.Trim(), UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttps || uri.Scheme == Uri.UriSchemeHttp))
        {
            return new UriContent(uri, "image/*");
        }

        throw new InvalidInputException(string.Create(CultureInfo.InvariantCulture,
            $"image column \"{column}\" holds neither an http(s) URL, a data URL nor bytea: {AnswerValidator.Excerpt(text)}"));
    }

    /// <summary>The media type from the file signature, or null.</summary>
    internal static string? MediaTypeOf(ReadOnlySpan<byte> bytes) => bytes switch
    {
        [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, ..] => "image/png",
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x47, 0x49, 0x46, 0x38, ..] => "image/gif",
        [0x52, 0x49, 0x46, 0x46, _, _, _, _, 0x57, 0x45, 0x42, 0x50, ..] => "image/webp",
        _ => null,
    };
}
