using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PgLlm.Planning;

/// <summary>
/// How far a new answer agrees with the value a row holds, per target, from 0 to 1: exact (1 or 0) for enums,
/// booleans, numbers (by value: <c>4.50</c> equals <c>4.5</c>), dates and times (by instant), uuids, arrays and
/// objects; for free text the normalized Levenshtein similarity (1 - edits / the longer text's length) of the
/// lower-cased, whitespace-collapsed texts (token Jaccard for texts too long for it, see <see cref="LevenshteinLimit"/>).
/// </summary>
public static class AnswerAgreement
{
    /// <summary>How free text is compared, for reports.</summary>
    public const string TextMeasure = "normalized Levenshtein similarity of lower-cased, whitespace-collapsed text";

    /// <summary>The largest product of the two texts' lengths compared by edits; longer texts by token Jaccard.</summary>
    public const long LevenshteinLimit = 4_000_000;

    /// <summary>Whether values of a target of this kind (<c>TableCheck.KindOf</c>) are compared exactly.</summary>
    public static bool IsExact(string kind) => kind != "string";

    /// <summary>The agreement of <paramref name="newValue"/> with <paramref name="oldValue"/>, for a target of <paramref name="kind"/>.</summary>
    public static double Of(string kind, JsonElement oldValue, JsonElement newValue)
    {
        var oldNull = oldValue.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined;
        var newNull = newValue.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined;
        if (oldNull || newNull)
        {
            return oldNull == newNull ? 1 : 0;
        }

        if (kind == "string" && oldValue.ValueKind == JsonValueKind.String && newValue.ValueKind == JsonValueKind.String)
        {
            return TextSimilarity(oldValue.GetString()!, newValue.GetString()!);
        }

        return Equal(kind, oldValue, newValue) ? 1 : 0;
    }

    /// <summary>The similarity of two texts, from 0 to 1 (see the class remarks).</summary>
    public static double TextSimilarity(string a, string b)
    {
        var (x, y) = (Normalize(a), Normalize(b));
        if (x.Length == 0 && y.Length == 0)
        {
            return 1;
        }

        if ((long)x.Length * y.Length > LevenshteinLimit)
        {
            var (wordsX, wordsY) = (x.Split(' ').ToHashSet(StringComparer.Ordinal), y.Split(' ').ToHashSet(StringComparer.Ordinal));
            return (double)wordsX.Intersect(wordsY).Count() / wordsX.Union(wordsY).Count();
        }

        return 1 - ((double)Levenshtein(x, y) / Math.Max(x.Length, y.Length));
    }

    private static bool Equal(string kind, JsonElement a, JsonElement b) => kind switch
    {
        "integer" or "number" when a.ValueKind == JsonValueKind.Number && b.ValueKind == JsonValueKind.Number =>
            a.TryGetDecimal(out var x) && b.TryGetDecimal(out var y) ? x == y : a.GetDouble().Equals(b.GetDouble()),
        "date-time" or "date" or "time" or "uuid" when a.ValueKind == JsonValueKind.String && b.ValueKind == JsonValueKind.String =>
            Parsed(kind, a.GetString()!) is { } x && Parsed(kind, b.GetString()!) is { } y ? x.Equals(y) : a.GetString() == b.GetString(),
        _ => JsonElement.DeepEquals(a, b),
    };

    /// <summary>A date, time or uuid as a value (so that <c>...Z</c> equals <c>...+00:00</c>); null when it does not parse.</summary>
    private static object? Parsed(string kind, string text) => kind switch
    {
        "date-time" => DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var instant) ? instant.UtcDateTime : null,
        "date" => DateOnly.TryParse(text, CultureInfo.InvariantCulture, out var date) ? date : null,
        "time" => TimeOnly.TryParse(text, CultureInfo.InvariantCulture, out var time) ? time : null,
        _ => Guid.TryParse(text, out var id) ? id : null,
    };

    private static string Normalize(string text)
    {
        var builder = new StringBuilder(text.Length);
        foreach (var c in text.Trim())
        {
            if (char.IsWhiteSpace(c))
            {
                if (builder.Length > 0 && builder[^1] != ' ')
                {
                    builder.Append(' ');
                }
            }
            else
            {
                builder.Append(char.ToLowerInvariant(c));
            }
        }

        return builder.ToString();
    }

    private static int Levenshtein(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitution, Math.Min(previous[j], current[j - 1]) + 1);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }
}
