using System;
using System.Collections.Generic;
using System.Linq;
using System.Security.Cryptography;
using System.Text;

namespace PgLlm.Generators.Sql;

/// <summary>
/// The one place that turns user text into SQL: identifiers, literals, arrays and dollar-quoted
/// bodies. Nothing else in the generator interpolates a name or a string into SQL.
/// </summary>
internal static class SqlWriter
{
    /// <summary>PostgreSQL's NAMEDATALEN - 1: longer identifiers are silently truncated by the server.</summary>
    public const int MaxIdentifierBytes = 63;

    public static string Ident(string name) => "\"" + name.Replace("\"", "\"\"") + "\"";

    public static string Qualified(string schema, string name) => Ident(schema) + "." + Ident(name);

    public static string Literal(string? value) => value is null ? "NULL" : "'" + value.Replace("'", "''") + "'";

    public static string TextArray(IEnumerable<string> values) =>
        "ARRAY[" + string.Join(", ", values.Select(Literal)) + "]::text[]";

    /// <summary>Wraps a body in a dollar quote whose tag the body does not contain.</summary>
    public static string DollarQuote(string body)
    {
        var tag = "$pgllm$";
        for (var i = 1; body.Contains(tag); i++)
        {
            tag = "$pgllm" + i.ToString(System.Globalization.CultureInfo.InvariantCulture) + "$";
        }

        return tag + body + tag;
    }

    /// <summary>
    /// A name that fits PostgreSQL's identifier limit: kept whole when it fits, else cut on a
    /// character boundary and suffixed with a hash of the whole name, so distinct names stay distinct.
    /// </summary>
    public static string FitName(string name)
    {
        if (Encoding.UTF8.GetByteCount(name) <= MaxIdentifierBytes)
        {
            return name;
        }

        var suffix = "~" + Hash(name).Substring(0, 8);
        var builder = new StringBuilder();
        foreach (var c in name)
        {
            if (Encoding.UTF8.GetByteCount(builder.ToString() + c) + suffix.Length > MaxIdentifierBytes)
            {
                break;
            }

            builder.Append(c);
        }

        return builder + suffix;
    }

    /// <summary>Lowercase hex SHA-256 of the UTF-8 text.</summary>
    public static string Hash(string text)
    {
        using var sha = SHA256.Create();
        var bytes = sha.ComputeHash(Encoding.UTF8.GetBytes(text));
        var builder = new StringBuilder(bytes.Length * 2);
        foreach (var b in bytes)
        {
            builder.Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
        }

        return builder.ToString();
    }

    /// <summary>A JSON string literal (for schemas written without a JSON library).</summary>
    public static string JsonString(string value)
    {
        var builder = new StringBuilder(value.Length + 2).Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': builder.Append("\\\""); break;
                case '\\': builder.Append("\\\\"); break;
                case '\n': builder.Append("\\n"); break;
                case '\r': builder.Append("\\r"); break;
                case '\t': builder.Append("\\t"); break;
                default:
                    if (c < ' ')
                    {
                        builder.Append("\\u").Append(((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        builder.Append(c);
                    }

                    break;
            }
        }

        return builder.Append('"').ToString();
    }

    /// <summary>Rejects text PostgreSQL cannot store in a string at all.</summary>
    public static bool IsStorable(string value) => value.IndexOf('\0') < 0;

    /// <summary>Converts CRLF to LF so generated scripts are identical on every OS.</summary>
    public static string NormalizeNewlines(string text) => text.Replace("\r\n", "\n");

    /// <summary>Names joined as a SQL list, each quoted.</summary>
    public static string IdentList(IEnumerable<string> names, string prefix = "") =>
        string.Join(", ", names.Select(n => prefix + Ident(n)));

    /// <summary>Throws when a caller passes something that is not a valid identifier at all.</summary>
    public static void RequireIdentifier(string name)
    {
        if (name.Length == 0 || !IsStorable(name))
        {
            throw new ArgumentException("An identifier must be non-empty and contain no NUL character.", nameof(name));
        }
    }
}
