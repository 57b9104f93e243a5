using System.Text.Json;

namespace PgLlm.Planning;

/// <summary>
/// The output tokens of an answer guessed from its JSON schema, for a task with no history: the answer object's
/// characters (each property's name and a typical value of its type) at 4 characters a token.
/// </summary>
internal static class SchemaGuess
{
    /// <summary>The characters of a free-text value with no <c>maxLength</c>: a sentence.</summary>
    private const int TextCharacters = 80;

    public static double OutputTokens(JsonElement schema)
    {
        var characters = 2 + Characters(schema, 0);
        return Math.Ceiling(characters / PlanEstimator.DefaultCharactersPerToken);
    }

    private static double Characters(JsonElement schema, int depth)
    {
        if (schema.ValueKind != JsonValueKind.Object || depth > 8)
        {
            return TextCharacters;
        }

        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.GetArrayLength() > 0)
        {
            return values.EnumerateArray().Average(v => (double)v.GetRawText().Length);
        }

        if (schema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object)
        {
            // "name": value, per property.
            return 2 + properties.EnumerateObject().Sum(p => p.Name.Length + 4 + Characters(p.Value, depth + 1));
        }

        return TypeOf(schema) switch
        {
            "boolean" => 5,
            "integer" => 3,
            "number" => 6,
            "array" => 2 + (2 * Characters(schema.TryGetProperty("items", out var items) ? items : default, depth + 1)),
            "string" when schema.TryGetProperty("format", out _) => 22,
            "string" when schema.TryGetProperty("maxLength", out var max) && max.TryGetInt32(out var length) => 2 + Math.Min(length, TextCharacters),
            _ => 2 + TextCharacters,
        };
    }

    private static string? TypeOf(JsonElement schema) =>
        !schema.TryGetProperty("type", out var type) ? null
        : type.ValueKind == JsonValueKind.String ? type.GetString()
        : type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()).FirstOrDefault(t => t != "null")
        : null;
}
