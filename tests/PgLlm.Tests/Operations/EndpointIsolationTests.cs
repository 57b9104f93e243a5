using Microsoft.Extensions.Options;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Queue;
using PgLlm.Tests.Integration;
using PgLlm.Worker;

namespace PgLlm.Tests.Operations;

/// <summary>Each endpoint has its own slots, and the worker claims for them only the tasks that endpoint serves.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class EndpointIsolationTests
{
    private const string SlowTask = "public.line_items:category";
    private const string FastTask = "public.flaky:output";

    private readonly PgLlmFixture _fixture;

    public EndpointIsolationTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_lane_claims_half_its_concurrency_ahead_and_gives_those_jobs_back_when_stopped()
    {
        await using var slow = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMinutes(1) });
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var options = Ops.Options(_fixture, o =>
        {
            o.Worker.ShutdownGrace = TimeSpan.FromMilliseconds(100);
            o.Endpoints["tiny-model"] = new PgLlmEndpointOptions { BaseUrl = slow.BaseUrl.ToString(), ApiKey = slow.ApiKey, Model = "slow-v1", Concurrency = 8 };
        });
        await db.DataSource.ExecAsync("INSERT INTO line_items (order_id, line_no, description) SELECT 1, n, 'item ' || n FROM generate_series(1, 20) AS n");

        using var stop = new CancellationTokenSource();
        using var worker = new PgLlmWorker(db.DataSource, ChatClientFactory.Create(options, db.DataSource), Options.Create(options));
        var run = worker.RunAsync(stop.Token);
        try
        {
            await Eventually.TrueAsync(
                async () => slow.RequestCount >= 8 && await SlowInStateAsync(db, "running") >= 12,
                "8 calls reached the slow endpoint and 12 of its jobs are claimed");

            // 8 calls in flight (the endpoint's concurrency) and 4 more jobs claimed, waiting for a slot: still so
            // after the worker claimed and finished a job of another endpoint, a later turn of its loop.
            await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'later')");
            await Eventually.TrueAsync(
                async () => await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{FastTask}' AND state = 'succeeded'") == 1,
                "a job of the default endpoint succeeded");
            Assert.Equal(8, slow.RequestCount);
            Assert.Equal(12L, await SlowInStateAsync(db, "running"));
            Assert.Equal(8L, await SlowInStateAsync(db, "pending"));
        }
        finally
        {
            await stop.CancelAsync();
            await run;
        }

        // Stopped: the calls were cancelled and every job given back without spending an attempt,
        // the waiting ones included (they never reached the endpoint).
        Assert.Equal(8, slow.RequestCount);
        Assert.Equal(["pending:0:20"], await db.DataSource.ListAsync<string>(
            $"SELECT state || ':' || attempt || ':' || count(*) FROM llm.job WHERE task = '{SlowTask}' GROUP BY state, attempt"));
    }

    private static async Task<long> SlowInStateAsync(TestDatabase db, string state) =>
        await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{SlowTask}' AND state = '{state}'");

    [Fact]
    public async Task A_slow_endpoint_does_not_stall_tasks_that_use_another()
    {
        // line_items:category declares Model = "tiny-model": here, an endpoint that takes a minute to answer.
        await using var slow = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMinutes(1) });
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var options = Ops.Options(_fixture, o =>
        {
            o.Worker.Concurrency = 2;
            o.Worker.ShutdownGrace = TimeSpan.FromMilliseconds(100);
            o.Endpoints["tiny-model"] = new PgLlmEndpointOptions { BaseUrl = slow.BaseUrl.ToString(), ApiKey = slow.ApiKey, Model = "slow-v1" };
        });

        // The slow endpoint's jobs are first in the queue: with shared slots they would take them all.
        await db.DataSource.ExecAsync("INSERT INTO line_items (order_id, line_no, description) SELECT 1, n, 'item ' || n FROM generate_series(1, 6) AS n");
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT n, 'x' || n FROM generate_series(1, 10) AS n");

        using var stop = new CancellationTokenSource();
        using var worker = new PgLlmWorker(db.DataSource, ChatClientFactory.Create(options, db.DataSource), Options.Create(options));
        var run = worker.RunAsync(stop.Token);
        try
        {
            await Eventually.TrueAsync(async () => await FastSucceededAsync(db) >= 10, "the other endpoint's 10 jobs succeeded");

            Assert.Equal(10, await FastSucceededAsync(db));
            Assert.Equal(10, _fixture.Model.RequestCount);
            // The slow endpoint holds its own two slots, and no more of its jobs were started.
            Assert.Equal(2, slow.RequestCount);
            Assert.Equal(2L, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{SlowTask}' AND state = 'running'"));
            Assert.Equal(4L, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{SlowTask}' AND state = 'pending'"));
        }
        finally
        {
            await stop.CancelAsync();
            await run;
        }

        // Stopped: the slow calls were cancelled and their jobs released, not failed.
        Assert.Equal(6L, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{SlowTask}' AND state = 'pending'"));
    }

    [Fact]
    public async Task A_claim_takes_only_the_tasks_its_filter_allows()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'a'), (1, 2, 'b')");
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c')");

        var only = await db.DataSource.ScalarAsync<string[]>(
            $"SELECT array_agg(task) FROM llm.claim('w', 10, 60, ARRAY['{SlowTask}'], NULL)");
        var except = await db.DataSource.ScalarAsync<string[]>(
            $"SELECT coalesce(array_agg(task), '{{}}') FROM llm.claim('w', 10, 60, NULL, ARRAY['{FastTask}'])");
        var none = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.claim('w', 10, 60, '{}', NULL)");
        var rest = await db.DataSource.ScalarAsync<string[]>("SELECT array_agg(task) FROM llm.claim('w', 10, 60)");

        Assert.Equal([SlowTask, SlowTask], only);
        Assert.Empty(except);
        Assert.Equal(0L, none);
        Assert.Equal([FastTask, FastTask, FastTask], rest);
    }

    [Fact]
    public async Task Lanes_send_each_task_to_its_endpoint_and_everything_else_to_the_default()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        using var registry = new TaskRegistry(db.DataSource);
        var tasks = await registry.AllAsync(CancellationToken.None);
        var options = Ops.Options(_fixture, o =>
        {
            o.Endpoints["tiny-model"] = new PgLlmEndpointOptions { BaseUrl = "http://127.0.0.1:9/v1", Concurrency = 3 };
            o.Endpoints["unused"] = new PgLlmEndpointOptions { BaseUrl = "http://127.0.0.1:9/v1" };
        });

        var lanes = new EndpointLanes(options);
        lanes.Update(tasks);

        Assert.Equal([null, "tiny-model", "unused"], lanes.All.Select(l => l.Endpoint));
        Assert.Equal([options.Worker.Concurrency, 3, options.Worker.Concurrency], lanes.All.Select(l => l.Concurrency - l.CallsInFlight));
        // Claims go half the concurrency ahead (none below 4).
        Assert.Equal([options.Worker.Concurrency / 2, 0, options.Worker.Concurrency / 2], lanes.All.Select(l => l.Ahead));
        Assert.Equal(lanes.All.Select(l => l.Concurrency + l.Ahead), lanes.All.Select(l => l.Slots.CurrentCount));
        Assert.Equal(new TaskFilter(null, [SlowTask]).Except, lanes.All[0].Filter.Except);
        Assert.Null(lanes.All[0].Filter.Only);
        Assert.Equal([SlowTask], lanes.All[1].Filter.Only!);
        Assert.False(lanes.All[2].CanClaim);
        Assert.True(lanes.All[0].CanClaim);

        // With no named endpoints: one lane that claims every task.
        var single = new EndpointLanes(Ops.Options(_fixture));
        single.Update(tasks);
        Assert.Same(TaskFilter.Any, Assert.Single(single.All).Filter);

        var invalid = Ops.Options(_fixture, o => o.Endpoints["bad"] = new PgLlmEndpointOptions { Concurrency = 0 });
        Assert.Contains("PgLlm:Endpoints:bad:Concurrency", Assert.Throws<ArgumentException>(() => new EndpointLanes(invalid)).Message);
    }

    private static async Task<long> FastSucceededAsync(TestDatabase db) =>
        await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{FastTask}' AND state = 'succeeded'");
}
