namespace PgLlm.Migrations;

/// <summary>
/// The kinds of answer a target receives (its JSON type refined by format: <c>string</c>, <c>enum</c>,
/// <c>integer</c>, <c>number</c>, <c>boolean</c>, <c>date-time</c>, <c>date</c>, <c>time</c>, <c>uuid</c>,
/// <c>object</c>, <c>array of ...</c>) and the PostgreSQL type a column for each is given. One source for
/// the generator (linked into it) and the runtime's <see cref="TableCheck"/>, so the DDL the migrator
/// suggests and the one the worker suggests agree.
/// </summary>
internal static class AnswerKinds
{
    /// <summary>The prefix of an array's kind: <c>array of integer</c>.</summary>
    public const string ArrayOf = "array of ";

    /// <summary>The PostgreSQL type of a column for answers of <paramref name="kind"/>.</summary>
    public static string SqlTypeOf(string kind)
    {
        if (kind.StartsWith(ArrayOf, System.StringComparison.Ordinal))
        {
            var element = kind.Substring(ArrayOf.Length);
            return element is "object" or "array" ? "jsonb" : SqlTypeOf(element) + "[]";
        }

        return kind switch
        {
            "boolean" => "boolean",
            "integer" => "integer",
            "number" => "numeric",
            "date-time" => "timestamptz",
            "date" => "date",
            "time" => "time",
            "uuid" => "uuid",
            "object" => "jsonb",
            _ => "text",
        };
    }
}
