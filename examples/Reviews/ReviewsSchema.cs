using PgLlm.Migrations;

namespace Reviews;

/// <summary>The example's migration scripts: its own table first, then everything PgLlm generated.</summary>
internal static class ReviewsSchema
{
    /// <summary>Where the generated SQL is committed, relative to this project.</summary>
    public const string GeneratedSqlFolder = "Sql";

    /// <summary>The application's own scripts (embedded <c>Schema/*.sql</c>).</summary>
    public static IReadOnlyList<PgLlmScript> Application { get; } = LoadApplicationScripts();

    /// <summary>Every script, in the order they apply.</summary>
    public static IReadOnlyList<PgLlmScript> All { get; } = [.. Application, .. PgLlm.Generated.PgLlmScripts.All];

    private static List<PgLlmScript> LoadApplicationScripts()
    {
        var assembly = typeof(ReviewsSchema).Assembly;
        const string prefix = "Reviews.Schema.";
        return assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(n =>
            {
                using var stream = assembly.GetManifestResourceStream(n)!;
                using var reader = new StreamReader(stream);
                return PgLlmScript.Application(n[prefix.Length..^".sql".Length], reader.ReadToEnd());
            })
            .ToList();
    }
}
