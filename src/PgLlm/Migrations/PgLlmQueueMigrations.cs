using System.Text;

namespace PgLlm.Migrations;

/// <summary>
/// The queue's schema as numbered, forward-only migrations (<c>Migrations/Queue/NNNN_name.sql</c>, embedded
/// in this assembly): each runs once, in order, and is journaled by its name. A step is never edited once
/// released; a change is a new step. <see cref="PgLlmMigrator"/> applies them before any table's script.
/// </summary>
public static class PgLlmQueueMigrations
{
    private const string ResourcePrefix = "PgLlm.Migrations.Queue.";

    /// <summary>Every step, in the order it applies.</summary>
    public static IReadOnlyList<PgLlmScript> All { get; } = Load();

    private static PgLlmScript[] Load()
    {
        var assembly = typeof(PgLlmQueueMigrations).Assembly;
        return assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(n =>
            {
                using var stream = assembly.GetManifestResourceStream(n)!;
                using var reader = new StreamReader(stream, Encoding.UTF8);
                var name = n[ResourcePrefix.Length..^".sql".Length];
                return new PgLlmScript(name, string.Empty, PgLlmScriptKind.Queue, reader.ReadToEnd().ReplaceLineEndings("\n"));
            })
            .ToArray();
    }
}
