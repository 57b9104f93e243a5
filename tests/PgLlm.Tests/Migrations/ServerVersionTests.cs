using Npgsql;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Migrations;

/// <summary>A server older than PgLlm's minimum is refused with one line before anything is applied.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class ServerVersionTests
{
    private readonly PgLlmFixture _fixture;

    public ServerVersionTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_server_older_than_the_minimum_is_refused_in_one_line_and_nothing_is_applied()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
        var version = await db.ScalarAsync<string>("SELECT current_setting('server_version')");
        // This server stands for an old one: the minimum is raised above it.
        var migrator = new PgLlmMigrator(db, PgLlmFixture.Scripts) { MinimumServerVersionNum = 990000 };

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() => migrator.MigrateAsync());

        Assert.Equal($"PgLlm needs PostgreSQL 99 or later, and this server runs PostgreSQL {version}: nothing was applied.", error.Message);
        Assert.False(await db.ScalarAsync<bool>("SELECT to_regnamespace('llm') IS NOT NULL"));
        Assert.False(await db.ScalarAsync<bool>("SELECT to_regclass('public.reviews') IS NOT NULL"));
    }

    [Fact]
    public async Task The_minimum_is_the_version_the_tests_run_on()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());

        Assert.Equal(15, PgLlmMigrator.MinimumPostgresVersion);
        Assert.True(await db.ScalarAsync<int>("SELECT current_setting('server_version_num')::integer") >= PgLlmMigrator.MinimumPostgresVersion * 10000);
        Assert.NotEmpty((await new PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync()).Applied);
    }
}
