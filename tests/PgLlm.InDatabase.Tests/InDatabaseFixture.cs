using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Worker;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// One real PostgreSQL server with pg_cron loaded (its database is <see cref="CronDatabase"/>) and one real
/// chat-completions endpoint, both on loopback. Every test gets a database of its own with the test stand-in
/// for the http extension (or the real one, for the tests marked <see cref="RealHttpFactAttribute"/>), the
/// generated scripts and the in-database worker (unscheduled: tests CALL it).
/// </summary>
public sealed class InDatabaseFixture : IAsyncLifetime
{
    /// <summary>The one database where pg_cron lives (cron.database_name).</summary>
    public const string CronDatabase = "pgllm_cron";

    public LocalPostgres Postgres { get; private set; } = null!;

    public LocalModelServer Model { get; private set; } = null!;

    /// <summary>The test tables' schema, then everything the generator emitted for TestTables.cs.</summary>
    public static IReadOnlyList<PgLlmScript> TableScripts { get; } =
    [
        PgLlmScript.Application("0001-in-database-tables", ReadResource("Schema.0001-in-database-tables.sql")),
        .. PgLlm.Generated.PgLlmScripts.All,
    ];

    /// <summary>The test-only stand-in for the pgsql-http extension.</summary>
    public static string HttpStandIn { get; } = ReadResource("HttpStandIn.http-standin.sql");

    public async Task InitializeAsync()
    {
        Postgres = await LocalPostgres.StartAsync(new LocalPostgresOptions { CronDatabase = CronDatabase });
        Model = await LocalModelServer.StartAsync();
        await Postgres.CreateDatabaseAsync(CronDatabase);
    }

    public async Task DisposeAsync()
    {
        await Model.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    /// <summary>
    /// A fresh database, with the http stand-in (or, with <paramref name="realHttp"/>, the real http extension) and the
    /// scripts applied, configured for the local endpoint unless not wanted.
    /// </summary>
    public async Task<NpgsqlDataSource> CreateDatabaseAsync(bool configure = true, bool realHttp = false)
    {
        var dataSource = NpgsqlDataSource.Create(await Postgres.CreateDatabaseAsync());
        await dataSource.ExecAsync(realHttp ? "CREATE EXTENSION http" : HttpStandIn);
        await new PgLlmMigrator(dataSource, TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Schedule = false })).MigrateAsync();
        if (configure)
        {
            await ConfigureAsync(dataSource);
        }

        return dataSource;
    }

    /// <summary>The local endpoint, with test-friendly timings (short backoff and idle poll).</summary>
    public async Task ConfigureAsync(NpgsqlDataSource dataSource, double timeoutSeconds = 30)
    {
        await PgLlmInDatabase.ConfigureAsync(dataSource, Model.BaseUrl.ToString(), Model.ApiKey, "test-model", TimeSpan.FromSeconds(timeoutSeconds));
        await dataSource.ExecAsync(
            "SELECT llm.configure(base_url, api_key, model, p_retry_base_seconds => 0.02, p_retry_max_seconds => 0.1, p_idle_poll_seconds => 0.1) FROM llm.worker_settings");
    }

    /// <summary>CALLs the in-database worker until the queue is idle (bounded by <paramref name="runSeconds"/>); returns the model calls it made.</summary>
    public static async Task<int> RunWorkerAsync(NpgsqlDataSource dataSource, double runSeconds = 60, bool stopWhenIdle = true)
    {
        await using var connection = await dataSource.OpenConnectionAsync();
        return await RunWorkerAsync(connection, runSeconds, stopWhenIdle);
    }

    public static async Task<int> RunWorkerAsync(NpgsqlConnection connection, double runSeconds = 60, bool stopWhenIdle = true)
    {
        await using var call = new NpgsqlCommand("CALL llm.run_worker(p_run_seconds => $1, p_stop_when_idle => $2)", connection)
        {
            // The procedure bounds itself; the command timeout only guards against a hang.
            CommandTimeout = (int)runSeconds + 120,
        };
        call.Parameters.Add(new NpgsqlParameter<double> { TypedValue = runSeconds });
        call.Parameters.Add(new NpgsqlParameter<bool> { TypedValue = stopWhenIdle });
        return (int)(await call.ExecuteScalarAsync())!;
    }

    /// <summary>A .NET worker against the same endpoint, for side-by-side runs.</summary>
    public PgLlmWorker CreateDotNetWorker(NpgsqlDataSource dataSource, int concurrency)
    {
        var options = new PgLlmOptions
        {
            BaseUrl = Model.BaseUrl.ToString(),
            ApiKey = Model.ApiKey,
            Model = "test-model",
            Worker = new PgLlmWorkerOptions
            {
                Concurrency = concurrency,
                BatchSize = concurrency,
                PollInterval = TimeSpan.FromMilliseconds(200),
                RetryBaseDelay = TimeSpan.FromMilliseconds(20),
                RetryMaxDelay = TimeSpan.FromMilliseconds(100),
                ModelTimeout = TimeSpan.FromSeconds(30),
                ShutdownGrace = TimeSpan.FromSeconds(5),
            },
        };
        return new PgLlmWorker(dataSource, ChatClientFactory.Create(options), Options.Create(options));
    }

    private static string ReadResource(string name)
    {
        using var stream = typeof(InDatabaseFixture).Assembly.GetManifestResourceStream("PgLlm.InDatabase.Tests." + name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

[CollectionDefinition(Name)]
public sealed class InDatabaseGroup : ICollectionFixture<InDatabaseFixture>
{
    public const string Name = "PgLlm in-database worker";
}
