using Npgsql;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// A queue migrated before shared rate limits (up to 0005): the worker keeps its own limits and drains as before,
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
        var steps = PgLlmQueueMigrations.All.TakeWhile(m => string.CompareOrdinal(m.Name, "0006") < 0).ToList();
        Assert.Equal("0005_endpoint_governor", steps[^1].Name);
        // The chain's table script needs queue step 10 (its upstreams are registered there): left out here.
        var scripts = PgLlmFixture.Scripts.Where(s => s.Stream != PgLlm.Generated.PgLlmScripts.Article.Stream).ToList();
        await new PgLlmMigrator(db, scripts) { QueueMigrations = steps }.MigrateAsync();
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
