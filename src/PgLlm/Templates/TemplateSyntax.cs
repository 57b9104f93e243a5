// Shared by the runtime library and the source generator (linked into both), so a template is
// read by exactly one set of rules at compile time and at run time. Keep it netstandard2.0-clean.
using System.Collections.Generic;
using System.Text;

namespace PgLlm.Templates;

/// <summary>One piece of a prompt template: literal text or a placeholder name.</summary>
internal readonly struct TemplateToken
{
    public TemplateToken(bool isPlaceholder, string value, int start, int length)
    {
        IsPlaceholder = isPlaceholder;
        Value = value;
        Start = start;
        Length = length;
    }

    /// <summary>True for <c>{Name}</c>, false for literal text (with <c>{{</c> and <c>}}</c> already unescaped).</summary>
    public bool IsPlaceholder { get; }

    /// <summary>The placeholder's name, or the literal text.</summary>
    public string Value { get; }

    /// <summary>Offset of the token in the template (for a placeholder, of its opening brace).</summary>
    public int Start { get; }

    /// <summary>Length of the token in the template, braces included.</summary>
    public int Length { get; }
}

/// <summary>
/// Template rules: <c>{Name}</c> is a placeholder, <c>{{</c> and <c>}}</c> are literal braces,
/// anything else with a brace is malformed. Rendering is single-pass: values are never re-read.
/// </summary>
internal static class TemplateSyntax
{
    /// <summary>Splits a template into tokens, or returns a description of the first malformed brace.</summary>
    public static List<TemplateToken> Parse(string template, out string? error, out int errorOffset)
    {
        var tokens = new List<TemplateToken>();
        var literal = new StringBuilder();
        var literalStart = 0;
        error = null;
        errorOffset = -1;
        var i = 0;
        while (i < template.Length)
        {
            var c = template[i];
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{')
            {
                literal.Append('{');
                i += 2;
                continue;
            }

            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}')
            {
                literal.Append('}');
                i += 2;
                continue;
            }

            if (c == '}')
            {
                error = "a '}' closes no placeholder; write '}}' for a literal brace";
                errorOffset = i;
                return tokens;
            }

            if (c == '{')
            {
                var close = template.IndexOf('}', i + 1);
                var nextOpen = template.IndexOf('{', i + 1);
                if (close < 0 || (nextOpen >= 0 && nextOpen < close))
                {
                    error = "a '{' is never closed; write '{{' for a literal brace";
                    errorOffset = i;
                    return tokens;
                }

                var name = template.Substring(i + 1, close - i - 1);
                if (name.Trim().Length == 0)
                {
                    error = "an empty placeholder '{}'; name a property or column, or write '{{}}' for literal braces";
                    errorOffset = i;
                    return tokens;
                }

                if (literal.Length > 0)
                {
                    tokens.Add(new TemplateToken(false, literal.ToString(), literalStart, i - literalStart));
                    literal.Clear();
                }

                tokens.Add(new TemplateToken(true, name, i, close - i + 1));
                i = close + 1;
                literalStart = i;
                continue;
            }

            literal.Append(c);
            i++;
        }

        if (literal.Length > 0)
        {
            tokens.Add(new TemplateToken(false, literal.ToString(), literalStart, template.Length - literalStart));
        }

        return tokens;
    }

    /// <summary>Escapes literal text so that it reads back unchanged.</summary>
    public static string Escape(string literal) => literal.Replace("{", "{{").Replace("}", "}}");
}
