using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PgLlm.Failures;
using PgLlm.Queue;

namespace PgLlm.Completions;

/// <summary>
/// Checks a model's answer against the task's JSON schema (which the generator derived from the C#
/// property types) and converts it exactly for the write-back. A mismatch names the field and the value,
/// e.g. <c>expected integer for "stars", got "four"</c>, and nothing is written. A target answered
/// <c>null</c> where its schema does not allow it (the task did not declare AllowNull) says so.
/// </summary>
internal static partial class AnswerValidator
{
    private const int MaxDepth = 32;

    private static readonly JsonSerializerOptions WriteOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Returns the answer as a JSON object holding exactly the target columns, converted; throws <see cref="InvalidAnswerException"/>.</summary>
    public static string Validate(TaskDefinition task, string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new InvalidAnswerException("the model returned an empty answer");
        }

        JsonNode? node;
        try
        {
            node = JsonNode.Parse(text);
        }
        catch (JsonException ex)
        {
            throw new InvalidAnswerException($"the answer is not valid JSON ({ex.Message}): {Excerpt(text)}");
        }

        if (node is not JsonObject answer)
        {
            throw new InvalidAnswerException($"the answer is not a JSON object: {Excerpt(text)}");
        }

        var properties = task.JsonSchema.ValueKind == JsonValueKind.Object && task.JsonSchema.TryGetProperty("properties", out var p) && p.ValueKind == JsonValueKind.Object
            ? p
            : default;
        var result = new JsonObject();
        foreach (var column in task.TargetColumns)
        {
            if (!answer.TryGetPropertyValue(column, out var value))
            {
                throw new InvalidAnswerException($"the answer has no \"{column}\": {Excerpt(text)}");
            }

            result[column] = properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(column, out var schema)
                ? Convert(value, schema, column, 0)
                : value?.DeepClone();
        }

        return result.ToJsonString(WriteOptions);
    }

    private static JsonNode? Convert(JsonNode? value, JsonElement schema, string path, int depth)
    {
        if (depth > MaxDepth || schema.ValueKind != JsonValueKind.Object)
        {
            return value?.DeepClone();
        }

        var (types, nullable) = TypesOf(schema);
        if (value is null)
        {
            if (nullable || types.Count == 0)
            {
                return null;
            }

            // A target may be null only when its task says so (the generator's schema allows null only then).
            throw depth == 0
                ? new InvalidAnswerException($"\"{path}\" is null, and the task does not allow null (AllowNull)")
                : Mismatch(Expected(types, schema), path, null);
        }

        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array)
        {
            return ConvertEnum(value, values, path);
        }

        var kind = value.GetValueKind();
        foreach (var type in types)
        {
            switch (type)
            {
                case "string" when kind == JsonValueKind.String:
                    return ConvertString(value.GetValue<string>(), schema, path);
                case "integer" when kind == JsonValueKind.Number:
                    return InRange(ConvertInteger(value, path), schema, "integer", path);
                case "number" when kind == JsonValueKind.Number:
                    return InRange(value.DeepClone(), schema, "number", path);
                case "boolean" when kind is JsonValueKind.True or JsonValueKind.False:
                    return value.DeepClone();
                case "array" when kind == JsonValueKind.Array:
                    return ConvertArray(value.AsArray(), schema, path, depth);
                case "object" when kind == JsonValueKind.Object:
                    return ConvertObject(value.AsObject(), schema, path, depth);
            }
        }

        if (types.Count == 0)
        {
            return value.DeepClone();
        }

        throw Mismatch(Expected(types, schema), path, value);
    }

    private static JsonValue ConvertString(string text, JsonElement schema, string path)
    {
        var format = schema.TryGetProperty("format", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
        var ok = format switch
        {
            "date" => DateOnly.TryParseExact(text, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.None, out _),
            "date-time" => DateTimePattern().IsMatch(text)
                && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.None, out _),
            "time" => TimeOnly.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.None, out _),
            "uuid" => Guid.TryParse(text, out _),
            _ => true,
        };
        return ok ? JsonValue.Create(text) : throw Mismatch(format switch
        {
            "date" => "a date (yyyy-mm-dd)",
            "date-time" => "a date-time with an offset (RFC 3339, e.g. 2024-05-01T12:00:00Z)",
            "time" => "a time (hh:mm:ss)",
            _ => "a " + format,
        }, path, JsonValue.Create(text));
    }

    /// <summary>minimum and maximum (from [Range]) hold for the exact value.</summary>
    private static JsonNode InRange(JsonNode value, JsonElement schema, string type, string path)
    {
        var minimum = schema.TryGetProperty("minimum", out var min) && min.ValueKind == JsonValueKind.Number ? min.GetDecimal() : (decimal?)null;
        var maximum = schema.TryGetProperty("maximum", out var max) && max.ValueKind == JsonValueKind.Number ? max.GetDecimal() : (decimal?)null;
        if (minimum is null && maximum is null)
        {
            return value;
        }

        var ok = decimal.TryParse(value.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var number)
            && (minimum is null || number >= minimum) && (maximum is null || number <= maximum);
        return ok ? value : throw Mismatch(string.Create(CultureInfo.InvariantCulture, $"{type} from {minimum?.ToString(CultureInfo.InvariantCulture) ?? "any"} to {maximum?.ToString(CultureInfo.InvariantCulture) ?? "any"}"), path, value);
    }

    private static JsonValue ConvertInteger(JsonNode value, string path)
    {
        var raw = value.ToJsonString();
        if (long.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var whole))
        {
            return JsonValue.Create(whole);
        }

        // 4.0 and 4e0 are the integer 4; 4.5 is not an integer, and nothing beyond 64 bits fits a column.
        if (decimal.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out var number)
            && decimal.Truncate(number) == number && number >= long.MinValue && number <= long.MaxValue)
        {
            return JsonValue.Create((long)number);
        }

        throw Mismatch("integer", path, value);
    }

    private static JsonValue ConvertEnum(JsonNode value, JsonElement values, string path)
    {
        var allowed = values.EnumerateArray().Where(v => v.ValueKind == JsonValueKind.String).Select(v => v.GetString()!).ToList();
        if (value.GetValueKind() == JsonValueKind.String)
        {
            var text = value.GetValue<string>();
            var match = allowed.FirstOrDefault(a => string.Equals(a, text, StringComparison.Ordinal))
                ?? allowed.FirstOrDefault(a => string.Equals(a, text.Trim(), StringComparison.OrdinalIgnoreCase));
            if (match is not null)
            {
                return JsonValue.Create(match);
            }
        }

        throw Mismatch("one of " + string.Join(", ", allowed.Select(a => "\"" + a + "\"")), path, value);
    }

    private static JsonArray ConvertArray(JsonArray array, JsonElement schema, string path, int depth)
    {
        var items = schema.TryGetProperty("items", out var i) ? i : default;
        var result = new JsonArray();
        for (var index = 0; index < array.Count; index++)
        {
            result.Add(items.ValueKind == JsonValueKind.Object
                ? Convert(array[index], items, $"{path}[{index}]", depth + 1)
                : array[index]?.DeepClone());
        }

        return result;
    }

    private static JsonObject ConvertObject(JsonObject obj, JsonElement schema, string path, int depth)
    {
        if (!schema.TryGetProperty("properties", out var properties) || properties.ValueKind != JsonValueKind.Object)
        {
            return (JsonObject)obj.DeepClone();
        }

        var result = new JsonObject();
        foreach (var property in properties.EnumerateObject())
        {
            if (!obj.TryGetPropertyValue(property.Name, out var value))
            {
                throw new InvalidAnswerException($"expected \"{property.Name}\" in \"{path}\", which has only {Keys(obj)}");
            }

            result[property.Name] = Convert(value, property.Value, path + "." + property.Name, depth + 1);
        }

        return result;
    }

    private static (List<string> Types, bool Nullable) TypesOf(JsonElement schema)
    {
        var types = new List<string>();
        if (schema.TryGetProperty("type", out var type))
        {
            if (type.ValueKind == JsonValueKind.String)
            {
                types.Add(type.GetString()!);
            }
            else if (type.ValueKind == JsonValueKind.Array)
            {
                types.AddRange(type.EnumerateArray().Where(t => t.ValueKind == JsonValueKind.String).Select(t => t.GetString()!));
            }
        }

        var nullable = types.Remove("null")
            || (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array
                && values.EnumerateArray().Any(v => v.ValueKind == JsonValueKind.Null));
        return (types, nullable);
    }

    private static string Expected(List<string> types, JsonElement schema) =>
        schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array
            ? "one of " + string.Join(", ", values.EnumerateArray().Where(v => v.ValueKind == JsonValueKind.String).Select(v => "\"" + v.GetString() + "\""))
            : string.Join(" or ", types);

    private static InvalidAnswerException Mismatch(string expected, string path, JsonNode? value) =>
        new($"expected {expected} for \"{path}\", got {Show(value)}");

    private static string Show(JsonNode? value)
    {
        if (value is null)
        {
            return "null";
        }

        var text = value.ToJsonString(WriteOptions);
        return value.GetValueKind() switch
        {
            JsonValueKind.Object => "an object " + Excerpt(text),
            JsonValueKind.Array => "an array " + Excerpt(text),
            _ => Excerpt(text),
        };
    }

    private static string Keys(JsonObject obj) => obj.Count == 0 ? "no keys" : string.Join(", ", obj.Select(p => "\"" + p.Key + "\""));

    internal static string Excerpt(string text) => text.Length <= 200 ? text : text[..200] + "...";

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$", RegexOptions.CultureInvariant)]
    private static partial Regex DateTimePattern();
}
