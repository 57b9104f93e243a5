using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Worker;

namespace PgLlm.Tests.Integration;

/// <summary>
/// One real PostgreSQL server and one real chat-completions endpoint, both on loopback, shared by the
/// integration tests; every test gets a database of its own, migrated with the generated scripts.
/// </summary>
public sealed class PgLlmFixture : IAsyncLifetime
{
    public LocalPostgres Postgres { get; private set; } = null!;

    public LocalModelServer Model { get; private set; } = null!;

    /// <summary>The test tables' schema, then everything the generator emitted for TestTables.cs.</summary>
    public static IReadOnlyList<PgLlmScript> Scripts { get; } =
    [
        PgLlmScript.Application("0001-test-tables", ReadSchema("0001-test-tables.sql")),
        PgLlmScript.Application("0002-typed-tables", ReadSchema("0002-typed-tables.sql")),
        .. PgLlm.Generated.PgLlmScripts.All,
    ];

    public async Task InitializeAsync()
    {
        Postgres = await LocalPostgres.StartAsync();
        Model = await LocalModelServer.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await Model.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    /// <summary>A fresh database with every script applied.</summary>
    public async Task<NpgsqlDataSource> CreateDatabaseAsync()
    {
        var dataSource = NpgsqlDataSource.Create(await Postgres.CreateDatabaseAsync());
        await new PgLlmMigrator(dataSource, Scripts).MigrateAsync();
        return dataSource;
    }

    /// <summary>A worker against the local endpoint, with test-friendly timings.</summary>
    public PgLlmWorker CreateWorker(NpgsqlDataSource dataSource, Action<PgLlmWorkerOptions>? configure = null)
    {
        var options = TestOptions.For(Model);
        configure?.Invoke(options.Worker);
        return new PgLlmWorker(dataSource, ChatClientFactory.Create(options), Options.Create(options));
    }

    private static string ReadSchema(string name)
    {
        using var stream = typeof(PgLlmFixture).Assembly.GetManifestResourceStream("PgLlm.Tests.Schema." + name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

[CollectionDefinition(Name)]
public sealed class IntegrationGroup : ICollectionFixture<PgLlmFixture>
{
    public const string Name = "PgLlm integration";
}
