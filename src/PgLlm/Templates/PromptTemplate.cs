using System.Text;
using System.Text.Json;

namespace PgLlm.Templates;

/// <summary>
/// A parsed prompt template. Rendering is single-pass: a value is inserted verbatim and never
/// scanned for placeholders, so a value <c>{other}</c> reaches the model as the text <c>{other}</c>.
/// </summary>
public sealed class PromptTemplate
{
    private readonly List<TemplateToken> _tokens;

    private PromptTemplate(string text, List<TemplateToken> tokens)
    {
        Text = text;
        _tokens = tokens;
        Placeholders = tokens.Where(t => t.IsPlaceholder).Select(t => t.Value).Distinct(StringComparer.Ordinal).ToArray();
    }

    /// <summary>The template as written.</summary>
    public string Text { get; }

    /// <summary>The placeholder names, in first-use order.</summary>
    public IReadOnlyList<string> Placeholders { get; }

    /// <summary>The template in order: literal text (placeholder null), or a placeholder's name.</summary>
    internal IEnumerable<(string Literal, string? Placeholder)> Parts =>
        _tokens.Select(t => t.IsPlaceholder ? (string.Empty, (string?)t.Value) : (t.Value, (string?)null));

    /// <summary>Parses a template.</summary>
    /// <exception cref="FormatException">A brace is malformed.</exception>
    public static PromptTemplate Parse(string template)
    {
        ArgumentNullException.ThrowIfNull(template);
        var tokens = TemplateSyntax.Parse(template, out var error, out var offset);
        return error is null
            ? new PromptTemplate(template, tokens)
            : throw new FormatException($"Malformed prompt template at offset {offset}: {error}.");
    }

    /// <summary>Renders with the values of a JSON object (column name to value). Missing or null values render empty.</summary>
    public string Render(JsonElement values)
    {
        var builder = new StringBuilder(Text.Length + 64);
        foreach (var token in _tokens)
        {
            if (!token.IsPlaceholder)
            {
                builder.Append(token.Value);
            }
            else if (values.ValueKind == JsonValueKind.Object && values.TryGetProperty(token.Value, out var value))
            {
                AppendValue(builder, value);
            }
        }

        return builder.ToString();
    }

    internal static void AppendValue(StringBuilder builder, JsonElement value)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                builder.Append(value.GetString());
                break;
            case JsonValueKind.Null:
            case JsonValueKind.Undefined:
                break;
            default:
                builder.Append(value.GetRawText());
                break;
        }
    }
}
