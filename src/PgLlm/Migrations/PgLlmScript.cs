namespace PgLlm.Migrations;

/// <summary>
/// What a script sets up, which also decides when it runs: the application's schema first, then the
/// queue's numbered migrations, then the runtime's add-ons, then tables.
/// </summary>
public enum PgLlmScriptKind
{
    /// <summary>The application's own schema (its tables), run once like any DbUp script.</summary>
    Application = 0,

    /// <summary>What the runtime adds on top of the queue (the opt-in in-database worker's scripts).</summary>
    Core = 1,

    /// <summary>The generated tasks of one table.</summary>
    Table = 2,

    /// <summary>One of the queue's numbered migrations (<see cref="PgLlmQueueMigrations"/>), run once, in order.</summary>
    Queue = 3,
}

/// <summary>
/// One migration script. Generated scripts belong to a <see cref="Stream"/> (one table, or an add-on of the runtime) and
/// carry a <see cref="Hash"/> of their SQL: when the SQL changes, the new script replaces the stream's
/// last applied one, so changing a prompt and rebuilding updates the task in place.
/// </summary>
/// <param name="Stream">The script's stream: stable across versions of the same script.</param>
/// <param name="Hash">A hash of <paramref name="Sql"/>; empty for run-once application scripts.</param>
/// <param name="Kind">What the script sets up.</param>
/// <param name="Sql">The SQL.</param>
public sealed record PgLlmScript(string Stream, string Hash, PgLlmScriptKind Kind, string Sql)
{
    /// <summary>
    /// For a table's generated script, what it expects of the table, checked against the database before
    /// any script is applied; null for other scripts.
    /// </summary>
    public PgLlmTableShape? Table { get; init; }

    /// <summary>The name the migration journal records: <c>stream@hash</c>, or the stream alone.</summary>
    public string Name => Hash.Length == 0 ? Stream : Stream + "@" + Hash;

    /// <summary>A file name for the script, safe on every file system.</summary>
    public string FileName
    {
        get
        {
            var invalid = Path.GetInvalidFileNameChars();
            var chars = Stream.Select(c => invalid.Contains(c) || c is '"' or '*' or '?' or ':' or '<' or '>' or '|' or '\\' ? '_' : c).ToArray();
            return new string(chars) + ".sql";
        }
    }

    /// <summary>An application script that runs once, like any DbUp script (for example the CREATE TABLE of the annotated tables).</summary>
    public static PgLlmScript Application(string name, string sql) => new(name, string.Empty, PgLlmScriptKind.Application, sql);

    /// <summary>The stream of a journaled script name (<c>stream@hash</c> or a plain name).</summary>
    public static string StreamOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var at = name.LastIndexOf('@');
        return at < 0 ? name : name[..at];
    }
}
