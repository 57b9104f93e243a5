using System.Buffers;
using System.Collections.Frozen;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>
/// The answers <see cref="LocalModelServer"/> gives when no <see cref="LocalModelServer.Responder"/> is set.
/// Everything is a pure function of the request, so tests can compute the expected value.
/// </summary>
/// <remarks>
/// <para>With a <c>json_schema</c> response format the answer is a JSON value that follows the schema: an object
/// gets exactly the schema's <c>properties</c> (in schema order), each derived from the property name, its type and
/// the user text:</para>
/// <list type="bullet">
/// <item><description><c>string</c>: a name containing <c>sentiment</c> or <c>emotion</c> gives <see cref="Sentiment"/> of the
/// user text; a name ending in <c>_es</c> or containing <c>spanish</c>, or a prompt that mentions "Spanish", gives
/// <see cref="TranslateToSpanish"/> of the subject text; otherwise <c>"&lt;name&gt;: &lt;first 60 chars of the subject text&gt;"</c>.
/// The subject text is the last user message after its last <c>": "</c> (or the whole message); when that is empty and the
/// message carries <c>image_url</c> parts, it is <c>"text in &lt;file name&gt;"</c> of the images, and the images' URLs join the hash. Strings with a
/// <c>format</c> (date-time, date, time, uuid, email, uri; or a description containing <c>format: date</c> and so on, as strict-mode
/// clients send it) get a fixed valid value.</description></item>
/// <item><description><c>integer</c>: <see cref="StableHash"/> of the user text mapped to 0–100 (1–5 when the name contains
/// <c>star</c> or <c>rating</c>; <c>minimum</c>/<c>maximum</c> win when present, also as <c>minimum: 1</c> lines of the description); <c>number</c>: the same range (0–20 when the
/// name contains <c>tax</c>) with two decimals, from the hash combined with <see cref="StableHash"/> of the name; <c>boolean</c>: the hash's parity (odd = true).</description></item>
/// <item><description><c>array</c>: one or two items (hash bit 1; clamped to <c>minItems</c>/<c>maxItems</c>) of the item schema;
/// <c>object</c>: recurse; <c>const</c>: the constant.</description></item>
/// <item><description><c>enum</c>: for sentiment/emotion names the <see cref="Sentiment"/> label when it is one of the values;
/// otherwise the first value whose text appears in the user text (case-insensitive), else the first value.</description></item>
/// <item><description>A type array such as <c>["string","null"]</c> uses the non-null type; <c>anyOf</c>/<c>oneOf</c> use the first
/// non-null branch; local <c>$ref</c>s (<c>#/$defs/…</c>) are resolved.</description></item>
/// </list>
/// <para>With a <c>json_object</c> response format the answer is <c>{"echo":"&lt;user text&gt;"}</c>; otherwise it is the
/// plain text <c>"echo: &lt;user text&gt;"</c>.</para>
/// </remarks>
public static class DeterministicModel
{
    private const int MaxDepth = 32;
    private const int SubjectLength = 60;

    private static readonly JsonWriterOptions WriterOptions = new()
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    private static readonly FrozenSet<string> PositiveWords = new[]
    {
        "love", "loved", "loves", "great", "excellent", "happy", "good", "amazing", "wonderful", "fantastic", "best", "perfect",
    }.ToFrozenSet(StringComparer.Ordinal);

    private static readonly FrozenSet<string> NegativeWords = new[]
    {
        "hate", "hated", "hates", "bad", "terrible", "awful", "slow", "broken", "worst", "horrible", "poor", "disappointing",
    }.ToFrozenSet(StringComparer.Ordinal);

    private static readonly FrozenDictionary<string, string> Spanish = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["i"] = "yo", ["you"] = "tú", ["we"] = "nosotros", ["they"] = "ellos", ["he"] = "él", ["she"] = "ella",
        ["it"] = "eso", ["my"] = "mi", ["your"] = "tu", ["our"] = "nuestro", ["love"] = "amo", ["like"] = "gusta",
        ["hate"] = "odio", ["this"] = "este", ["that"] = "ese", ["the"] = "el", ["a"] = "un", ["an"] = "un",
        ["is"] = "es", ["are"] = "son", ["was"] = "fue", ["were"] = "fueron", ["be"] = "ser", ["have"] = "tengo",
        ["has"] = "tiene", ["great"] = "genial", ["good"] = "bueno", ["bad"] = "malo", ["very"] = "muy",
        ["food"] = "comida", ["service"] = "servicio", ["product"] = "producto", ["slow"] = "lento", ["fast"] = "rápido",
        ["and"] = "y", ["but"] = "pero", ["or"] = "o", ["not"] = "no", ["no"] = "no", ["yes"] = "sí",
        ["with"] = "con", ["without"] = "sin", ["for"] = "para", ["of"] = "de", ["in"] = "en", ["to"] = "a",
        ["hello"] = "hola", ["thanks"] = "gracias", ["thank"] = "gracias", ["day"] = "día", ["time"] = "tiempo",
        ["price"] = "precio", ["quality"] = "calidad", ["delivery"] = "entrega", ["broken"] = "roto",
        ["excellent"] = "excelente", ["terrible"] = "terrible", ["happy"] = "feliz", ["new"] = "nuevo",
        ["old"] = "viejo", ["too"] = "demasiado", ["much"] = "mucho", ["all"] = "todo", ["always"] = "siempre",
        ["never"] = "nunca", ["don't"] = "no", ["it's"] = "es", ["please"] = "por favor", ["friend"] = "amigo",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>The default answer for <paramref name="request"/> (the assistant message content).</summary>
    /// <param name="request">The request.</param>
    /// <returns>A JSON document for <c>json_schema</c>/<c>json_object</c> requests, plain text otherwise.</returns>
    public static string Answer(ModelRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var userText = request.UserText;
        if (string.Equals(request.ResponseFormatType, "json_schema", StringComparison.OrdinalIgnoreCase) && request.Schema is { } schema)
        {
            // Images count: two requests with the same text and different images get different answers,
            // and an image-only prompt has the image as its subject.
            var images = request.Messages.LastOrDefault(m => m.Role == "user")?.ImageUrls ?? [];
            var subject = SubjectOf(request.LastUserText);
            if (images.Count > 0 && subject.Length == 0)
            {
                subject = "text in " + string.Join(", ", images.Select(DescribeImage));
            }

            var context = new SchemaContext(
                schema,
                userText,
                subject,
                MentionsSpanish(request),
                StableHash(images.Count == 0 ? userText : userText + "\n" + string.Join("\n", images)));
            return WriteJson(writer => WriteValue(writer, schema, request.SchemaName ?? "value", context, depth: 0));
        }

        if (string.Equals(request.ResponseFormatType, "json_object", StringComparison.OrdinalIgnoreCase))
        {
            return WriteJson(writer =>
            {
                writer.WriteStartObject();
                writer.WriteString("echo", userText);
                writer.WriteEndObject();
            });
        }

        return "echo: " + userText;
    }

    /// <summary>
    /// <c>"positive"</c>, <c>"negative"</c> or <c>"neutral"</c> by counting lexicon words (love, great, excellent, happy,
    /// good, amazing, … / hate, bad, terrible, awful, slow, broken, worst, …) in <paramref name="text"/>.
    /// </summary>
    /// <param name="text">Text to classify.</param>
    /// <returns>The label.</returns>
    public static string Sentiment(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var positive = 0;
        var negative = 0;
        foreach (var word in Words(text))
        {
            if (PositiveWords.Contains(word))
            {
                positive++;
            }
            else if (NegativeWords.Contains(word))
            {
                negative++;
            }
        }

        return positive > negative ? "positive" : negative > positive ? "negative" : "neutral";
    }

    /// <summary>Word-by-word "translation" with a tiny English→Spanish dictionary; unknown words are kept.</summary>
    /// <param name="text">English text.</param>
    /// <returns>The translated text (punctuation and spacing kept; a capitalized word gets a capitalized translation).</returns>
    public static string TranslateToSpanish(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var builder = new StringBuilder(text.Length + 8);
        var index = 0;
        while (index < text.Length)
        {
            var start = index;
            if (char.IsLetter(text[index]))
            {
                // A word is letters, with apostrophes allowed between letters ("don't").
                while (index < text.Length
                    && (char.IsLetter(text[index]) || (text[index] == '\'' && index + 1 < text.Length && char.IsLetter(text[index + 1]))))
                {
                    index++;
                }

                var word = text[start..index];
                if (Spanish.TryGetValue(word.ToLowerInvariant(), out var translation))
                {
                    builder.Append(char.IsUpper(word[0]) ? char.ToUpperInvariant(translation[0]) + translation[1..] : translation);
                }
                else
                {
                    builder.Append(word);
                }
            }
            else
            {
                while (index < text.Length && !char.IsLetter(text[index]))
                {
                    index++;
                }

                builder.Append(text, start, index - start);
            }
        }

        return builder.ToString();
    }

    /// <summary>32-bit FNV-1a hash of the UTF-8 bytes of <paramref name="text"/> (stable across processes and platforms).</summary>
    /// <param name="text">Text to hash.</param>
    /// <returns>The hash.</returns>
    public static uint StableHash(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        const uint offsetBasis = 2166136261;
        const uint prime = 16777619;
        var hash = offsetBasis;
        foreach (var b in Encoding.UTF8.GetBytes(text))
        {
            hash ^= b;
            hash *= prime;
        }

        return hash;
    }

    /// <summary>Deterministic token estimate used for <c>usage</c>: characters / 4, rounded up.</summary>
    /// <param name="text">Text to count.</param>
    /// <returns>The token count.</returns>
    public static int CountTokens(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return (text.Length + 3) / 4;
    }

    private sealed record SchemaContext(JsonElement Root, string UserText, string Subject, bool WantsSpanish, uint Hash);

    /// <summary>An image URL's last path segment, or a data URL's media type.</summary>
    private static string DescribeImage(string url)
    {
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var end = url.IndexOfAny([';', ',']);
            return (end > 5 ? url[5..end] : "image") + " data";
        }

        return Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Segments.Length > 0 && uri.Segments[^1] != "/"
            ? Uri.UnescapeDataString(uri.Segments[^1])
            : url;
    }

    private static string SubjectOf(string lastUserText)
    {
        var separator = lastUserText.LastIndexOf(": ", StringComparison.Ordinal);
        return (separator >= 0 ? lastUserText[(separator + 2)..] : lastUserText).Trim();
    }

    private static bool MentionsSpanish(ModelRequest request)
        => request.UserText.Contains("spanish", StringComparison.OrdinalIgnoreCase)
            || (request.SystemText?.Contains("spanish", StringComparison.OrdinalIgnoreCase) ?? false);

    private static void WriteValue(Utf8JsonWriter writer, JsonElement schema, string name, SchemaContext context, int depth)
    {
        if (depth > MaxDepth || schema.ValueKind != JsonValueKind.Object)
        {
            // Boolean schemas ("true") and runaway recursion.
            if (depth > MaxDepth)
            {
                writer.WriteNullValue();
            }
            else
            {
                WriteString(writer, schema, name, context);
            }

            return;
        }

        if (schema.TryGetProperty("$ref", out var reference) && reference.ValueKind == JsonValueKind.String)
        {
            if (TryResolve(context.Root, reference.GetString()!, out var target))
            {
                WriteValue(writer, target, name, context, depth + 1);
            }
            else
            {
                writer.WriteNullValue();
            }

            return;
        }

        if (schema.TryGetProperty("const", out var constant))
        {
            constant.WriteTo(writer);
            return;
        }

        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.GetArrayLength() > 0)
        {
            ChooseEnumValue(values, name, context).WriteTo(writer);
            return;
        }

        foreach (var keyword in (ReadOnlySpan<string>)["anyOf", "oneOf", "allOf"])
        {
            if (!schema.TryGetProperty("type", out _)
                && schema.TryGetProperty(keyword, out var branches)
                && branches.ValueKind == JsonValueKind.Array
                && branches.GetArrayLength() > 0)
            {
                var branch = branches.EnumerateArray().FirstOrDefault(b => ResolveType(b) != "null");
                WriteValue(writer, branch.ValueKind == JsonValueKind.Undefined ? branches[0] : branch, name, context, depth + 1);
                return;
            }
        }

        switch (ResolveType(schema))
        {
            case "null":
                writer.WriteNullValue();
                break;
            case "boolean":
                writer.WriteBooleanValue((context.Hash & 1) == 1);
                break;
            case "integer":
                var (minimum, maximum) = Range(schema, name);
                var span = (long)Math.Floor(maximum) - (long)Math.Ceiling(minimum) + 1;
                writer.WriteNumberValue((long)Math.Ceiling(minimum) + (span > 0 ? context.Hash % span : 0));
                break;
            case "number":
                var (low, high) = Range(schema, name);
                // The name joins the hash, so two amounts of one answer (a total and its taxes) differ.
                var numberHash = context.Hash ^ StableHash(name);
                writer.WriteNumberValue(Math.Round(low + (numberHash % 10001 / 10000.0 * (high - low)), 2));
                break;
            case "array":
                var count = 1 + (int)((context.Hash >> 1) & 1);
                if (GetInt(schema, "minItems") is { } minItems)
                {
                    count = Math.Max(count, minItems);
                }

                if (GetInt(schema, "maxItems") is { } maxItems)
                {
                    count = Math.Min(count, maxItems);
                }

                var items = schema.TryGetProperty("items", out var itemSchema) ? itemSchema : default;
                writer.WriteStartArray();
                for (var i = 0; i < count; i++)
                {
                    if (items.ValueKind == JsonValueKind.Undefined)
                    {
                        WriteString(writer, schema, name, context);
                    }
                    else
                    {
                        WriteValue(writer, items, name, context, depth + 1);
                    }
                }

                writer.WriteEndArray();
                break;
            case "object":
                writer.WriteStartObject();
                if (schema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object)
                {
                    foreach (var property in properties.EnumerateObject())
                    {
                        writer.WritePropertyName(property.Name);
                        WriteValue(writer, property.Value, property.Name, context, depth + 1);
                    }
                }

                writer.WriteEndObject();
                break;
            default:
                WriteString(writer, schema, name, context);
                break;
        }
    }

    private static void WriteString(Utf8JsonWriter writer, JsonElement schema, string name, SchemaContext context)
    {
        var format = schema.ValueKind == JsonValueKind.Object && schema.TryGetProperty("format", out var formatElement)
            ? formatElement.GetString()
            : FormatInDescription(schema);
        var lowerName = name.ToLowerInvariant();
        var value = format switch
        {
            "date-time" => "2024-01-01T00:00:00Z",
            "date" => "2024-01-01",
            "time" => "00:00:00",
            "uuid" => new Guid((int)context.Hash, 0, 0, new byte[8]).ToString(),
            "email" => lowerName + "@example.com",
            "uri" or "url" => "https://example.com/" + Uri.EscapeDataString(lowerName),
            _ when lowerName.Contains("sentiment", StringComparison.Ordinal) || lowerName.Contains("emotion", StringComparison.Ordinal)
                => Sentiment(context.UserText),
            _ when lowerName.EndsWith("_es", StringComparison.Ordinal) || lowerName.Contains("spanish", StringComparison.Ordinal) || context.WantsSpanish
                => TranslateToSpanish(context.Subject),
            _ => name + ": " + Truncate(context.Subject, SubjectLength),
        };

        if (format is null && GetInt(schema, "maxLength") is { } maxLength)
        {
            value = Truncate(value, maxLength);
        }

        writer.WriteStringValue(value);
    }

    /// <summary>A keyword a strict-mode client moved into the description as a line <c>"minimum: 1"</c>.</summary>
    private static double? NumberInDescription(JsonElement schema, string keyword)
    {
        if (schema.ValueKind != JsonValueKind.Object || !schema.TryGetProperty("description", out var description) || description.ValueKind != JsonValueKind.String)
        {
            return null;
        }

        foreach (var line in description.GetString()!.Split('\n'))
        {
            var text = line.Trim();
            if (text.StartsWith(keyword + ": ", StringComparison.Ordinal)
                && double.TryParse(text.AsSpan(keyword.Length + 2), NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }
        }

        return null;
    }

    /// <summary>Clients that send strict schemas move <c>format</c> into the description as <c>"format: date"</c>.</summary>
    private static string? FormatInDescription(JsonElement schema)
    {
        if (schema.ValueKind != JsonValueKind.Object || !schema.TryGetProperty("description", out var description) || description.ValueKind != JsonValueKind.String)
        {
            return null;
        }

        var text = description.GetString()!;
        var at = text.LastIndexOf("format: ", StringComparison.Ordinal);
        if (at < 0)
        {
            return null;
        }

        var end = at + "format: ".Length;
        while (end < text.Length && (char.IsLetterOrDigit(text[end]) || text[end] == '-'))
        {
            end++;
        }

        return text[(at + "format: ".Length)..end];
    }

    private static JsonElement ChooseEnumValue(JsonElement values, string name, SchemaContext context)
    {
        var lowerName = name.ToLowerInvariant();
        if (lowerName.Contains("sentiment", StringComparison.Ordinal) || lowerName.Contains("emotion", StringComparison.Ordinal))
        {
            var label = Sentiment(context.UserText);
            foreach (var value in values.EnumerateArray())
            {
                if (value.ValueKind == JsonValueKind.String && string.Equals(value.GetString(), label, StringComparison.OrdinalIgnoreCase))
                {
                    return value;
                }
            }
        }

        foreach (var value in values.EnumerateArray())
        {
            var text = value.ValueKind == JsonValueKind.String ? value.GetString() : value.GetRawText();
            if (!string.IsNullOrEmpty(text) && context.UserText.Contains(text, StringComparison.OrdinalIgnoreCase))
            {
                return value;
            }
        }

        return values[0];
    }

    private static string ResolveType(JsonElement schema)
    {
        if (schema.ValueKind != JsonValueKind.Object)
        {
            return "string";
        }

        if (schema.TryGetProperty("type", out var type))
        {
            if (type.ValueKind == JsonValueKind.String)
            {
                return type.GetString() ?? "string";
            }

            if (type.ValueKind == JsonValueKind.Array)
            {
                var types = type.EnumerateArray().Where(t => t.ValueKind == JsonValueKind.String).Select(t => t.GetString()!).ToList();
                return types.FirstOrDefault(t => t != "null") ?? (types.Count > 0 ? "null" : "string");
            }
        }

        if (schema.TryGetProperty("properties", out _))
        {
            return "object";
        }

        return schema.TryGetProperty("items", out _) ? "array" : "string";
    }

    private static (double Minimum, double Maximum) Range(JsonElement schema, string name)
    {
        var lowerName = name.ToLowerInvariant();
        var isRating = lowerName.Contains("star", StringComparison.Ordinal) || lowerName.Contains("rating", StringComparison.Ordinal);
        var minimum = GetDouble(schema, "minimum") ?? NumberInDescription(schema, "minimum") ?? (isRating ? 1 : 0);
        var isTax = lowerName.Contains("tax", StringComparison.Ordinal);
        var maximum = GetDouble(schema, "maximum") ?? NumberInDescription(schema, "maximum") ?? (isRating ? 5 : isTax ? 20 : 100);
        return maximum < minimum ? (maximum, minimum) : (minimum, maximum);
    }

    private static bool TryResolve(JsonElement root, string reference, out JsonElement target)
    {
        target = root;
        if (reference == "#")
        {
            return true;
        }

        if (!reference.StartsWith("#/", StringComparison.Ordinal))
        {
            return false;
        }

        foreach (var rawSegment in reference[2..].Split('/'))
        {
            var segment = Uri.UnescapeDataString(rawSegment).Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
            if (target.ValueKind == JsonValueKind.Object && target.TryGetProperty(segment, out var child))
            {
                target = child;
            }
            else if (target.ValueKind == JsonValueKind.Array
                && int.TryParse(segment, NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                && index < target.GetArrayLength())
            {
                target = target[index];
            }
            else
            {
                return false;
            }
        }

        return true;
    }

    private static int? GetInt(JsonElement schema, string name)
        => schema.ValueKind == JsonValueKind.Object && schema.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var number)
            ? number
            : null;

    private static double? GetDouble(JsonElement schema, string name)
        => schema.ValueKind == JsonValueKind.Object && schema.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number
            ? value.GetDouble()
            : null;

    private static string Truncate(string text, int length)
        => text.Length <= length ? text : text[..Math.Max(0, length)];

    private static IEnumerable<string> Words(string text)
    {
        var index = 0;
        while (index < text.Length)
        {
            while (index < text.Length && !char.IsLetter(text[index]))
            {
                index++;
            }

            var start = index;
            while (index < text.Length && char.IsLetter(text[index]))
            {
                index++;
            }

            if (index > start)
            {
                yield return text[start..index].ToLowerInvariant();
            }
        }
    }

    private static string WriteJson(Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            write(writer);
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }
}
