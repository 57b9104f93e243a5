namespace PgLlm.InDatabase;

/// <summary>How the in-database worker is installed (see <see cref="PgLlmInDatabase.Scripts"/>).</summary>
public sealed class PgLlmInDatabaseOptions
{
    /// <summary>
    /// Schedule the worker with pg_cron (default true): the migration then requires the <c>pg_cron</c>
    /// extension in the database. When false only the worker is installed, and something else calls
    /// <c>CALL llm.run_worker()</c>.
    /// </summary>
    public bool Schedule { get; set; } = true;

    /// <summary>How many pg_cron jobs run the worker side by side (default 1). Each takes one connection and runs one model call at a time.</summary>
    public int Workers { get; set; } = 1;
}
