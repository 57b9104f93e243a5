using Npgsql;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// A queue without shared rate limits (migrated before step 0006, which is taken back out here): the worker keeps its own limits and drains as before,
/// and the status shows the endpoints without limits.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SharedRateLimitUpgradeTests
{
    private readonly PgLlmFixture _fixture;

    public SharedRateLimitUpgradeTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task On_a_queue_without_shared_limits_the_worker_keeps_its_own_and_drains()
    {
        var connectionString = await _fixture.Postgres.CreateDatabaseAsync();
        await using var db = NpgsqlDataSource.Create(connectionString);
        // The table scripts of this release need every queue step (edited cells, chains), so the database is migrated
        // whole and step 6 is then taken back out, as a queue that never had it: what the worker reads is the shape.
        await new PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync();
        await db.ExecAsync(
            "DROP VIEW llm.endpoint_bucket_use; DROP FUNCTION llm.endpoint_take, llm.endpoint_pause; DROP TABLE llm.endpoint_bucket;" +
            "ALTER TABLE llm.endpoint_state DROP COLUMN paused_until");
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 20) AS g");

        var options = Ops.Options(_fixture, o => o.RateLimit.RequestsPerMinute = 6000);
        using var worker = Ops.Worker(db, options);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Assert.Equal(20, await worker.RunUntilIdleAsync(timeout.Token));

        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal(20, _fixture.Model.RequestCount);
        var (exit, list) = await Ops.RunAsync(Ops.Configuration(_fixture), connectionString, "endpoint", "list");
        Assert.Equal(0, exit);
        Assert.Contains("Endpoint default: closed", list, StringComparison.Ordinal);
        Assert.DoesNotContain("rate limit:", list, StringComparison.Ordinal);
    }
}
