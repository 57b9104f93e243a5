using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Worker;

namespace PgLlm.Tests.Security;

/// <summary>
/// A PostgreSQL cluster of its own (roles are cluster-wide) with the three roles of the security model, and a
/// chat-completions endpoint on loopback. Every test gets a database owned and migrated by the owner role, in
/// which the application role may write some tables and the worker's login is a member of <c>pgllm_worker</c>.
/// </summary>
public sealed class SecurityFixture : IAsyncLifetime
{
    /// <summary>Runs the migrations; owns the database, the tables and schema llm. May create roles.</summary>
    public const string Owner = "pgllm_owner";

    /// <summary>The worker's login: a member of pgllm_worker and nothing else.</summary>
    public const string WorkerLogin = "pgllm_worker_login";

    /// <summary>An application role: may read and write reviews, flaky and the hostile table; nothing in llm.</summary>
    public const string App = "app_writer";

    /// <summary>An application role with no right on any PgLlm table.</summary>
    public const string Outsider = "app_outsider";

    /// <summary>The hostile table, quoted.</summary>
    public const string HostileTable = "\"Sécurité 'Q'\".\"Ünïcödé \"\"Notes\"\"\"";

    public LocalPostgres Postgres { get; private set; } = null!;

    public LocalModelServer Model { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Postgres = await LocalPostgres.StartAsync();
        Model = await LocalModelServer.StartAsync();
        await using var superuser = NpgsqlDataSource.Create(Postgres.ConnectionString);
        await superuser.ExecAsync(
            $"CREATE ROLE {Owner} LOGIN CREATEROLE; CREATE ROLE {WorkerLogin} LOGIN; CREATE ROLE {App} LOGIN; CREATE ROLE {Outsider} LOGIN;");
    }

    public async Task DisposeAsync()
    {
        await Model.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    /// <summary>A fresh database migrated by the owner role, with the application role's grants.</summary>
    public async Task<SecureDatabase> CreateDatabaseAsync()
    {
        var name = "sec_" + Guid.NewGuid().ToString("N")[..12];
        await using (var server = NpgsqlDataSource.Create(Postgres.ConnectionString))
        {
            await server.ExecAsync($"CREATE DATABASE {name} OWNER {Owner}");
        }

        var database = new SecureDatabase(
            NpgsqlDataSource.Create(Postgres.GetConnectionString(name)),
            As(name, Owner),
            As(name, WorkerLogin),
            As(name, App),
            As(name, Outsider));
        await new PgLlmMigrator(database.Owner, PgLlmFixture.Scripts).MigrateAsync();

        // The deployment steps docs/security.md lists: the worker's login joins pgllm_worker, the
        // application's role gets rights on its tables only.
        await database.Superuser.ExecAsync($"GRANT pgllm_worker TO {WorkerLogin}");
        await database.Owner.ExecAsync(
            $"GRANT USAGE ON SCHEMA \"Sécurité 'Q'\" TO {App}; " +
            $"GRANT SELECT, INSERT, UPDATE, DELETE ON reviews, flaky, {HostileTable} TO {App}; " +
            $"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {App};");
        return database;
    }

    /// <summary>A worker against the local endpoint, connected through <paramref name="dataSource"/>.</summary>
    public PgLlmWorker CreateWorker(NpgsqlDataSource dataSource, Action<PgLlmWorkerOptions>? configure = null, ILogger<PgLlmWorker>? logger = null)
    {
        var options = TestOptions.For(Model, concurrency: 4);
        configure?.Invoke(options.Worker);
        return new PgLlmWorker(dataSource, ChatClientFactory.Create(options), Options.Create(options), logger);
    }

    private NpgsqlDataSource As(string database, string role) =>
        NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(Postgres.GetConnectionString(database)) { Username = role }.ConnectionString);
}

/// <summary>One test database, reachable as each role.</summary>
public sealed record SecureDatabase(
    NpgsqlDataSource Superuser,
    NpgsqlDataSource Owner,
    NpgsqlDataSource Worker,
    NpgsqlDataSource App,
    NpgsqlDataSource Outsider) : IAsyncDisposable
{
    public async ValueTask DisposeAsync()
    {
        foreach (var source in new[] { Superuser, Owner, Worker, App, Outsider })
        {
            await source.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class SecurityGroup : ICollectionFixture<SecurityFixture>
{
    public const string Name = "PgLlm security";
}

/// <summary>Keeps every log message a worker writes, formatted, so tests can look for leaks.</summary>
internal sealed class CapturingLogger<T> : ILogger<T>
{
    private readonly List<string> _messages = [];

    public IReadOnlyList<string> Messages
    {
        get
        {
            lock (_messages)
            {
                return _messages.ToList();
            }
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_messages)
        {
            _messages.Add(formatter(state, exception) + (exception is null ? string.Empty : " | " + exception));
        }
    }
}
