using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Hosting;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Operations;

/// <summary>The health check registered by AddPgLlm: queue depth, worker liveness, an unreachable database.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class HealthCheckTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public HealthCheckTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    private IHost BuildHost(string connectionString, IDictionary<string, string?>? extra = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        var configuration = Ops.Configuration(_fixture, extra);
        builder.Configuration.AddConfiguration(configuration);
        builder.Configuration["PgLlm:ConnectionString"] = connectionString;
        builder.Services.AddPgLlm(builder.Configuration);
        return builder.Build();
    }

    private static async Task<HealthReportEntry> CheckAsync(IHost host) =>
        (await host.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync()).Entries[PgLlmServiceCollectionExtensions.HealthCheckName];

    [Fact]
    public async Task A_running_worker_is_healthy_a_stopped_one_is_not()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        using var host = BuildHost(db.ConnectionString);

        var before = await CheckAsync(host);
        await host.StartAsync();
        var deadline = DateTime.UtcNow + Bound;
        HealthReportEntry running;
        do
        {
            await Task.Delay(100);
            running = await CheckAsync(host);
        }
        while ((running.Status != HealthStatus.Healthy || (long)running.Data["pending"] + (long)running.Data["running"] > 0) && DateTime.UtcNow < deadline);

        await host.StopAsync();
        var stopped = await CheckAsync(host);

        Assert.Equal(HealthStatus.Degraded, before.Status);
        Assert.Contains("has not started", before.Description, StringComparison.Ordinal);
        Assert.Equal(HealthStatus.Healthy, running.Status);
        Assert.Equal(0L, running.Data["pending"]);
        Assert.True(running.Data.ContainsKey("lastClaimAt"));
        Assert.Equal(HealthStatus.Unhealthy, stopped.Status);
        Assert.Contains("the worker stopped", stopped.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_deep_queue_is_degraded_and_reported_in_the_data()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' FROM generate_series(1, 3) AS i");
        var options = Ops.Options(_fixture, o => o.Monitoring.DegradedQueueDepth = 2);
        var check = new PgLlmHealthCheck(db.DataSource, Options.Create(options));

        var result = await check.CheckHealthAsync(new HealthCheckContext());

        Assert.Equal(HealthStatus.Degraded, result.Status);
        Assert.Equal(3L, result.Data["pending"]);
        Assert.Contains("more than 2 jobs pending", result.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_worker_that_stopped_asking_for_work_is_unhealthy()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        // Stuck: the only slot is held by a call that does not return within the check.
        var options = Ops.Options(_fixture, o =>
        {
            o.Monitoring.WorkerStallAfter = TimeSpan.FromMilliseconds(300);
            o.Worker.Concurrency = 1;
        });
        using var worker = Ops.Worker(db.DataSource, options);
        _fixture.Model.Latency = TimeSpan.FromSeconds(5);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        var check = new PgLlmHealthCheck(db.DataSource, Options.Create(options), worker);
        using var stop = new CancellationTokenSource();

        await worker.StartAsync(stop.Token);
        try
        {
            await Eventually.TrueAsync(() => _fixture.Model.RequestCount > 0, "the worker called the model", Bound);

            // The call holds the only slot for 5 s: the worker asks for no work, and past WorkerStallAfter the
            // check says so while the call is still running.
            HealthCheckResult result = default;
            await Eventually.TrueAsync(
                async () => (result = await check.CheckHealthAsync(new HealthCheckContext())).Status == HealthStatus.Unhealthy,
                "the check reports the stall", TimeSpan.FromSeconds(4));

            Assert.Equal(1, _fixture.Model.RequestCount);
            Assert.Equal(HealthStatus.Unhealthy, result.Status);
            Assert.Contains("has not asked for work", result.Description, StringComparison.Ordinal);
        }
        finally
        {
            await worker.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task An_unreachable_database_is_unhealthy()
    {
        await using var dataSource = NpgsqlDataSource.Create($"Host=127.0.0.1;Port={Ops.FreePort()};Username=x;Timeout=5");
        var check = new PgLlmHealthCheck(dataSource, Options.Create(Ops.Options(_fixture)));

        var result = await check.CheckHealthAsync(new HealthCheckContext());

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Contains("cannot read the queue", result.Description, StringComparison.Ordinal);
    }
}
