using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Npgsql;
using PgLlm.Migrations;

namespace PgLlm.InDatabase;

/// <summary>
/// The opt-in in-database worker: SQL that drains the same queue as the .NET worker from inside
/// PostgreSQL, with the <c>http</c> extension (pgsql-http 1.7 API) for model calls and <c>pg_cron</c>
/// to run it. Append <see cref="Scripts"/> to the generated scripts and set the endpoint with
/// <see cref="ConfigureAsync"/>. The core scripts never need either extension.
/// </summary>
public static class PgLlmInDatabase
{
    /// <summary>The stream of the worker script (needs the <c>http</c> extension).</summary>
    public const string WorkerStream = "0002-pgllm-in-database";

    /// <summary>The stream of the schedule script (needs the <c>pg_cron</c> extension).</summary>
    public const string ScheduleStream = "0003-pgllm-in-database-schedule";

    /// <summary>The in-database worker's migration scripts, to append to <c>PgLlm.Generated.PgLlmScripts.All</c>.</summary>
    /// <param name="options">Whether to schedule the worker with pg_cron, and how many workers; null for the defaults.</param>
    public static IReadOnlyList<PgLlmScript> Scripts(PgLlmInDatabaseOptions? options = null)
    {
        options ??= new PgLlmInDatabaseOptions();
        if (options.Workers < 1)
        {
            throw new ArgumentException("PgLlmInDatabaseOptions.Workers must be at least 1.", nameof(options));
        }

        // The worker, then the rules it shares with the .NET worker, in one stream (re-applied when any changes).
        var worker = ReadResource(WorkerStream) + "\n" + ReadResource("answer-validation") + "\n" + ReadResource("secret-redaction");
        var scripts = new List<PgLlmScript> { Script(WorkerStream, worker) };
        if (options.Schedule)
        {
            var sql = ReadResource(ScheduleStream)
                + "\nSELECT llm.schedule_worker(" + options.Workers.ToString(CultureInfo.InvariantCulture) + ");\n";
            scripts.Add(Script(ScheduleStream, sql));
        }

        return scripts;
    }

    /// <summary>Appends the in-database worker's scripts to <paramref name="scripts"/>.</summary>
    public static IEnumerable<PgLlmScript> WithInDatabaseWorker(this IEnumerable<PgLlmScript> scripts, PgLlmInDatabaseOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(scripts);
        return scripts.Concat(Scripts(options));
    }

    /// <summary>
    /// Stores the endpoint, API key and default model in <c>llm.worker_settings</c> (readable by its
    /// owner only) through <c>llm.configure</c>, with bind parameters so the key never appears in a
    /// statement's text.
    /// </summary>
    /// <param name="dataSource">The database.</param>
    /// <param name="baseUrl">The OpenAI-compatible base URL, e.g. <c>https://api.openai.com/v1</c>.</param>
    /// <param name="apiKey">The API key; null or empty sends no Authorization header.</param>
    /// <param name="model">The default model.</param>
    /// <param name="timeout">The model call timeout; null keeps the current one (default 120 s).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    public static async Task ConfigureAsync(NpgsqlDataSource dataSource, string baseUrl, string? apiKey, string model, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT llm.configure($1, $2, $3, p_timeout_seconds => $4)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = baseUrl });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)apiKey ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = model });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)timeout?.TotalSeconds ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Double });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Before anything is applied: when <paramref name="scripts"/> include the in-database worker,
    /// checks that the extensions it needs are installed, and fails naming the missing one.
    /// </summary>
    /// <exception cref="PgLlmMigrationException">An extension the in-database worker needs is missing.</exception>
    internal static async Task VerifyRequirementsAsync(NpgsqlConnection connection, IReadOnlyList<PgLlmScript> scripts, CancellationToken cancellationToken)
    {
        var worker = scripts.Any(s => s.Stream == WorkerStream);
        var schedule = scripts.Any(s => s.Stream == ScheduleStream);
        if (!worker && !schedule)
        {
            return;
        }

        await using var command = new NpgsqlCommand(
            """
            SELECT current_database(),
                   EXISTS (SELECT 1
                             FROM pg_catalog.pg_proc AS p
                             JOIN pg_catalog.pg_type AS a ON a.oid = p.proargtypes[0]
                             JOIN pg_catalog.pg_type AS r ON r.oid = p.prorettype
                            WHERE p.proname = 'http' AND p.pronargs = 1
                              AND a.typname = 'http_request' AND r.typname = 'http_response'),
                   EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'http'),
                   EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'),
                   EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_cron')
            """,
            connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        var database = reader.GetString(0);
        var problems = new List<string>();
        if (worker && !reader.GetBoolean(1))
        {
            problems.Add(reader.GetBoolean(2)
                ? $"the PostgreSQL extension 'http' (pgsql-http 1.7 or later) is available but not installed in database '{database}': run CREATE EXTENSION http;"
                : $"the PostgreSQL extension 'http' (pgsql-http 1.7 or later) is not installed in database '{database}', nor available on the server: install pgsql-http, then run CREATE EXTENSION http;");
        }

        if (schedule && !reader.GetBoolean(3))
        {
            problems.Add(reader.GetBoolean(4)
                ? $"the PostgreSQL extension 'pg_cron' is available but not installed in database '{database}': add pg_cron to shared_preload_libraries, set cron.database_name = '{database}', restart, then run CREATE EXTENSION pg_cron; (or set PgLlmInDatabaseOptions.Schedule = false and CALL llm.run_worker() from a scheduler of your own)"
                : $"the PostgreSQL extension 'pg_cron' is not installed in database '{database}', nor available on the server: install pg_cron (Debian: postgresql-15-cron), or set PgLlmInDatabaseOptions.Schedule = false and CALL llm.run_worker() from a scheduler of your own");
        }

        if (problems.Count > 0)
        {
            throw new PgLlmMigrationException("The in-database worker cannot be installed: " + string.Join("; and ", problems), null);
        }
    }

    private static PgLlmScript Script(string stream, string sql)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sql)))[..12];
        return new PgLlmScript(stream, hash, PgLlmScriptKind.Core, sql);
    }

    private static string ReadResource(string stream)
    {
        var name = "PgLlm.InDatabase." + stream + ".sql";
        using var resource = typeof(PgLlmInDatabase).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"The embedded script '{name}' is missing from the PgLlm assembly.");
        using var reader = new StreamReader(resource, Encoding.UTF8);
        return reader.ReadToEnd().ReplaceLineEndings("\n");
    }
}
