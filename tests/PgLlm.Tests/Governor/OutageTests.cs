using System.Diagnostics;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The circuit breaker, shared by two real worker processes (<c>pgllm worker</c>): an outage in the middle of a
/// drain (the port refusing connections, then the endpoint answering 503) opens the endpoint for both; its jobs
/// wait without spending attempts, one probe at a time tests it, and the drain resumes by itself after recovery.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class OutageTests
{
    /// <summary>Short timings, so the outage, the probes and the recovery fit the test's bound.</summary>
    private static readonly Dictionary<string, string> WorkerSettings = new()
    {
        ["Worker__PollInterval"] = "00:00:00.500",
        ["Worker__BatchSize"] = "8",
        ["Worker__ModelTimeout"] = "00:00:05",
        ["Worker__RetryBaseDelay"] = "00:00:00.100",
        ["Worker__RetryMaxDelay"] = "00:00:00.500",
        ["Governor__FailureThreshold"] = Threshold.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Governor__ProbeInterval"] = "00:00:00.400",
        ["Governor__MaxProbeInterval"] = "00:00:01",
        ["Governor__RefreshInterval"] = "00:00:00.200",
    };

    private const int Rows = 3000;
    private const int Threshold = 3;
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan ProbeInterval = TimeSpan.FromMilliseconds(400);
    private readonly PgLlmFixture _fixture;

    public OutageTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task An_outage_during_a_drain_by_two_workers_spends_no_attempts_dead_letters_nothing_and_the_drain_resumes_after_it()
    {
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMilliseconds(50) });
        var outage = 0;
        model.Responder = request => Volatile.Read(ref outage) == 1
            ? ModelReply.Error(503, "The service is temporarily unavailable.")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await using var forwarder = TcpForwarder.Start(model.BaseUrl);
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, {Rows}) AS g");

        var baseUrl = forwarder.BaseUrlFor(model.BaseUrl);
        var workers = Enumerable.Range(1, 2).Select(i => WorkerProcess.Start($"outage-worker-{i}", db.ConnectionString, baseUrl, model.ApiKey, 8, WorkerSettings)).ToList();
        try
        {
            // Mid-drain: both workers have answered jobs, many are left.
            await UntilAsync(async () => await db.DataSource.ScalarAsync<bool>(
                "SELECT count(DISTINCT locked_by) FILTER (WHERE state = 'running') = 2 AND count(*) FILTER (WHERE state = 'succeeded') >= 100 FROM llm.job"), workers);
            var before = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'");
            Assert.True(before < Rows / 2, $"the drain ended too soon for an outage in its middle ({before} done)");

            // The port refuses connections: the breaker opens for both workers.
            await forwarder.DownAsync();
            await UntilAsync(async () => await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'default'") == "open", workers);
            var (_, status) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "status");
            Assert.Contains("Endpoint default: open", status, StringComparison.Ordinal);
            // A probe met the refused port too.
            await UntilAsync(async () => await db.DataSource.ScalarAsync<int>("SELECT failed_probes FROM llm.endpoint_state WHERE endpoint = 'default'") >= 1, workers);

            // Then the endpoint answers 503: only probes reach it, one at a time, further and further apart.
            var atOutage = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'");
            Volatile.Write(ref outage, 1);
            model.ClearRequests();
            forwarder.Up();
            await UntilAsync(() => Task.FromResult(model.RequestCount >= 3), workers);
            var probes = model.Requests.OrderBy(r => r.ReceivedAt).ToList();
            foreach (var (earlier, later) in probes.Zip(probes.Skip(1)))
            {
                Assert.True(later.ReceivedAt - earlier.ReceivedAt >= ProbeInterval * 0.75, $"two probes {(later.ReceivedAt - earlier.ReceivedAt).TotalMilliseconds:0} ms apart");
            }

            Assert.Equal(atOutage, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'"));
            Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));

            // Recovery: the next probe succeeds and both workers drain the rest by themselves.
            Volatile.Write(ref outage, 0);
            var recovered = Stopwatch.StartNew();
            await UntilAsync(async () => await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'default'") == "closed", workers);
            Assert.True(recovered.Elapsed < TimeSpan.FromSeconds(5), $"closed {recovered.Elapsed.TotalSeconds:0.0} s after recovery");
            await UntilAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == Rows, workers);
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }
        }

        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        // Before the breaker opened, at most Threshold - 1 failed calls (one per job) spent an attempt; no job spent two.
        Assert.InRange(await db.DataSource.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"), 1, 2);
        Assert.InRange(await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE attempt > 1"), 0, Threshold - 1);
    }

    /// <summary>Polls a condition every 20 ms, failing after the test's bound or when a worker exits.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, List<WorkerProcess> workers)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            foreach (var worker in workers)
            {
                Assert.False(worker.Process.HasExited, $"worker {worker.Id} exited: {worker.Output}");
            }

            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound: " + string.Join(" | ", workers.Select(w => w.Output)));
            await Task.Delay(20);
        }
    }

    /// <summary>One <c>pgllm worker</c> process with short breaker timings, its output kept for the failure message.</summary>
}
