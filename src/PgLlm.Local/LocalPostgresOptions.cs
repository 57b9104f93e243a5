namespace PgLlm.Local;

/// <summary>Options for <see cref="LocalPostgres.StartAsync(LocalPostgresOptions?, CancellationToken)"/>.</summary>
public sealed class LocalPostgresOptions
{
    /// <summary>
    /// Directory that holds <c>initdb</c>, <c>pg_ctl</c> and <c>postgres</c>. When null, the environment variable
    /// <c>PGLLM_PG_BIN</c> is used, then <c>PATH</c>, then the highest version under <c>/usr/lib/postgresql/*/bin</c>.
    /// </summary>
    public string? BinDirectory { get; set; }

    /// <summary>
    /// Sets <c>fsync=off</c> for a faster server that may lose data on an OS crash. Default false: the server keeps
    /// PostgreSQL's durability defaults (<c>synchronous_commit</c> is never changed).
    /// </summary>
    public bool FastButUnsafe { get; set; }

    /// <summary>Value for <c>max_connections</c>. Default 200.</summary>
    public int MaxConnections { get; set; } = 200;

    /// <summary>Value for <c>shared_preload_libraries</c> (for example <c>"pg_cron"</c>), or null to leave it unset.</summary>
    public string? SharedPreloadLibraries { get; set; }

    /// <summary>
    /// When set, loads pg_cron (added to <see cref="SharedPreloadLibraries"/>) with <c>cron.database_name</c> set to this
    /// database, and lets pg_cron connect through the server's Unix socket (<c>cron.host</c>). Create the database and
    /// run <c>CREATE EXTENSION pg_cron</c> in it after the start. Needs the pg_cron package (Debian: postgresql-15-cron).
    /// </summary>
    public string? CronDatabase { get; set; }

    /// <summary>
    /// Extra server settings (name to value), equivalent to <c>postgres -c name=value</c>. They are written to
    /// <c>postgresql.conf</c>, so values may contain spaces and quotes.
    /// </summary>
    public IDictionary<string, string> Settings { get; } = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);

    /// <summary>Server time zone (<c>timezone</c> and <c>log_timezone</c>). Default <c>"UTC"</c>.</summary>
    public string TimeZone { get; set; } = "UTC";

    /// <summary>OS user that runs PostgreSQL when the current process is root. Default <c>"postgres"</c>.</summary>
    public string ServiceUser { get; set; } = "postgres";

    /// <summary>How long <c>initdb</c>, a server start or a server stop may take. Default 60 seconds.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Starts a small detached <c>/bin/sh</c> watchdog that stops the server and deletes its directory when this process
    /// dies without disposing it (killed test host, SIGTERM, crash). It polls once a second and exits by itself once
    /// the instance is disposed. Default true (Unix only).
    /// </summary>
    public bool StopWhenProcessDies { get; set; } = true;

    /// <summary>How many fresh ports are tried when another process grabs the chosen port first. Default 5.</summary>
    public int PortAttempts { get; set; } = 5;
}
