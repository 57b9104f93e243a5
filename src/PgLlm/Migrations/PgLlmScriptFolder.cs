namespace PgLlm.Migrations;

/// <summary>
/// The generated scripts as plain <c>.sql</c> files, for committing to a repository where they are
/// reviewed as SQL, and for checking that the committed copy matches what the generator emits.
/// </summary>
public static class PgLlmScriptFolder
{
    /// <summary>Writes each script to <c>directory/FileName</c>, replacing older versions.</summary>
    public static void Write(string directory, IEnumerable<PgLlmScript> scripts)
    {
        ArgumentNullException.ThrowIfNull(scripts);
        Directory.CreateDirectory(directory);
        foreach (var script in scripts)
        {
            File.WriteAllText(Path.Combine(directory, script.FileName), script.Sql);
        }
    }

    /// <summary>
    /// Lists how the folder differs from the scripts: missing files, files with other content, and
    /// <c>.sql</c> files no script produces. Empty when they match.
    /// </summary>
    public static IReadOnlyList<string> Compare(string directory, IEnumerable<PgLlmScript> scripts)
    {
        ArgumentNullException.ThrowIfNull(scripts);
        var problems = new List<string>();
        var expected = scripts.ToList();
        foreach (var script in expected)
        {
            var path = Path.Combine(directory, script.FileName);
            if (!File.Exists(path))
            {
                problems.Add($"{script.FileName}: missing");
            }
            else if (File.ReadAllText(path).ReplaceLineEndings("\n") != script.Sql)
            {
                problems.Add($"{script.FileName}: differs from the generated script");
            }
        }

        if (Directory.Exists(directory))
        {
            var names = expected.Select(s => s.FileName).ToHashSet(StringComparer.Ordinal);
            problems.AddRange(Directory.EnumerateFiles(directory, "*.sql")
                .Select(Path.GetFileName)
                .Where(n => !names.Contains(n!))
                .Select(n => $"{n}: no generated script has this name"));
        }

        return problems;
    }
}
