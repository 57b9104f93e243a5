using System.Diagnostics;
using System.Globalization;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;
using Xunit.Abstractions;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The issue's outage, at its size: a 90-second outage (connection refused, then 503s) in the middle of a
/// 5,000-job drain by two worker processes (<c>pgllm worker</c>): 0 jobs dead-lettered, no job spends more than
/// one attempt on the outage, the drain resumes within 5 s of recovery, every row filled. The circuit breaker is
/// shared by both workers through the database: it opens for both, their jobs wait without spending attempts,
/// one probe at a time tests the endpoint, and the drain resumes by itself.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class OutageTests
{
    private const int Rows = 5000;
    private const int Concurrency = 8;

    /// <summary>The default <c>Governor:FailureThreshold</c>.</summary>
    private const int Threshold = 5;

    /// <summary>New answers after recovery that show the drain flowing again (more than the probe).</summary>
    private const int Flowing = 100;

    /// <summary>
    /// The governor's default timings (threshold 5 in 30 s, first probe after 2 s, probes at most 3 s apart, state read
    /// every second). The model timeout is shortened so that nothing can hang the test for long.
    /// </summary>
    private static readonly Dictionary<string, string> WorkerSettings = new()
    {
        ["Worker__ModelTimeout"] = "00:00:10",
    };

    private static readonly TimeSpan Refused = TimeSpan.FromSeconds(45);
    private static readonly TimeSpan Outage = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan Resume = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan ProbeInterval = TimeSpan.FromSeconds(2);
    private readonly PgLlmFixture _fixture;
    private readonly ITestOutputHelper _output;
    private volatile bool _unavailable;

    public OutageTests(PgLlmFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    [Fact]
    public async Task A_90_second_outage_in_a_5000_job_drain_by_two_workers_dead_letters_nothing_spends_at_most_one_attempt_per_job_and_the_drain_resumes_within_5_s()
    {
        var total = Stopwatch.StartNew();
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMilliseconds(50) });
        model.Responder = request => _unavailable
            ? ModelReply.Error(503, "The service is temporarily unavailable.")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await using var forwarder = TcpForwarder.Start(model.BaseUrl);
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, {Rows}) AS g");

        var baseUrl = forwarder.BaseUrlFor(model.BaseUrl);
        var workers = Enumerable.Range(1, 2)
            .Select(i => WorkerProcess.Start($"outage-worker-{i}", db.ConnectionString + $";Application Name=outage-worker-{i}", baseUrl, model.ApiKey, Concurrency, WorkerSettings))
            .ToList();
        try
        {
            var watch = new OutageWatch(db.DataSource, workers);
            await MidDrainAsync(db, watch);
            await ConnectionRefusedAsync(db, watch, forwarder);
            await ServiceUnavailableAsync(db, watch, model, forwarder);
            await RecoveryAsync(db, watch);
            var drained = await watch.UntilAsync(async () => await Succeeded(db) == Rows, TimeSpan.FromMinutes(1), "the drain ends");
            _output.WriteLine($"drained the rest {drained.TotalSeconds:0.0} s after the drain resumed; invariants checked {watch.Checks} times during the outage; " +
                $"peak connections per worker: {string.Join(", ", watch.PeakConnections.OrderBy(p => p.Key).Select(p => $"{p.Key} {p.Value}"))}");
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }
        }

        await AssertOutcomeAsync(db);
        _output.WriteLine($"test took {total.Elapsed.TotalSeconds:0.0} s");
    }

    /// <summary>Both workers are answering jobs, and 30% of them are done.</summary>
    private static async Task MidDrainAsync(TestDatabase db, OutageWatch watch)
    {
        await watch.UntilAsync(async () => await db.DataSource.ScalarAsync<bool>(
            $"SELECT count(DISTINCT locked_by) FILTER (WHERE state = 'running') = 2 AND count(*) FILTER (WHERE state = 'succeeded') >= {Rows * 3 / 10} FROM llm.job"),
            TimeSpan.FromMinutes(1), "both workers mid-drain");
    }

    /// <summary>The port refuses connections for 45 s of the outage's clock: the breaker opens for both workers, and the probes meet the refused port.</summary>
    private async Task ConnectionRefusedAsync(TestDatabase db, OutageWatch watch, TcpForwarder forwarder)
    {
        await watch.BeginAsync(forwarder.DownAsync);
        var done = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM outage_down WHERE state = 'succeeded'");
        Assert.True(done < Rows * 7 / 10, $"the drain was too far along for an outage in its middle ({done} done)");

        await watch.UntilAsync(async () => await EndpointState(db) == "open", Refused, "the breaker opens");
        var opened = watch.Clock.Elapsed;
        // The calls that met the outage before the breaker opened, and the jobs claimed ahead, have settled, and every
        // worker has read the open state (notified at once, or by its refresh every second).
        await watch.UntilAsync(
            async () => await db.DataSource.ScalarAsync<bool>(
                "SELECT (SELECT count(*) FROM llm.job WHERE state = 'running') <= 1 AND (SELECT since FROM llm.endpoint_state WHERE endpoint = 'default') < now() - interval '2 seconds'"),
            Refused, "the calls in flight settle");
        await watch.OpenedAsync();
        var (_, status) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "status");
        Assert.Contains("Endpoint default: open", status, StringComparison.Ordinal);

        await watch.HoldUntilAsync(Refused);
        var failedProbes = await FailedProbes(db);
        Assert.True(failedProbes >= 1, "no probe met the refused port");
        _output.WriteLine($"outage began with {done} of {Rows} jobs done; breaker open after {opened.TotalSeconds:0.00} s; {failedProbes} probes refused in {Refused.TotalSeconds:0} s");
    }

    /// <summary>The endpoint answers 503 until the outage's clock reads 90 s: only probes reach it, one at a time, at least the probe interval apart.</summary>
    private async Task ServiceUnavailableAsync(TestDatabase db, OutageWatch watch, LocalModelServer model, TcpForwarder forwarder)
    {
        var failedProbes = await FailedProbes(db);
        _unavailable = true;
        model.ClearRequests();
        forwarder.Up();
        await watch.HoldUntilAsync(Outage);

        var probes = model.Requests.OrderBy(r => r.ReceivedAt).ToList();
        Assert.True(probes.Count >= 5, $"{probes.Count} probes in {(Outage - Refused).TotalSeconds:0} s of 503s");
        foreach (var (earlier, later) in probes.Zip(probes.Skip(1)))
        {
            Assert.True(later.ReceivedAt - earlier.ReceivedAt >= ProbeInterval * 0.75, $"two probes {(later.ReceivedAt - earlier.ReceivedAt).TotalMilliseconds:0} ms apart");
        }

        // Each probe's 503 was counted (the last one's report may still be on its way, and a refused one's may have come late).
        Assert.InRange(await FailedProbes(db) - failedProbes, probes.Count - 1, probes.Count + 1);
        _output.WriteLine($"{probes.Count} probes met 503s; the outage ended after {watch.Clock.Elapsed.TotalSeconds:0.0} s");
    }

    /// <summary>The endpoint answers again: the next probe closes the breaker and both workers drain again, all within 5 s.</summary>
    private async Task RecoveryAsync(TestDatabase db, OutageWatch watch)
    {
        var before = await Succeeded(db);
        watch.End();
        _unavailable = false;
        var recovered = Stopwatch.StartNew();
        TimeSpan? answered = null, closed = null, flowing = null;
        await watch.UntilAsync(
            async () =>
            {
                var found = await db.DataSource.ScalarAsync<long[]>(
                    "SELECT ARRAY[count(*), (SELECT count(*) FROM llm.endpoint_state WHERE endpoint = 'default' AND state = 'closed')] FROM llm.job WHERE state = 'succeeded'");
                answered ??= found[0] > before ? recovered.Elapsed : null;
                flowing ??= found[0] >= before + Flowing ? recovered.Elapsed : null;
                closed ??= found[1] == 1 ? recovered.Elapsed : null;
                return answered is not null && closed is not null && flowing is not null;
            },
            TimeSpan.FromSeconds(30), "the drain resumes", TimeSpan.FromMilliseconds(20));
        _output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"after recovery: first answer {answered!.Value.TotalSeconds:0.00} s, breaker closed {closed!.Value.TotalSeconds:0.00} s, {Flowing} answers {flowing!.Value.TotalSeconds:0.00} s"));
        Assert.True(answered <= Resume, $"the first answer came {answered.Value.TotalSeconds:0.0} s after recovery");
        Assert.True(closed <= Resume, $"the breaker closed {closed.Value.TotalSeconds:0.0} s after recovery");
        Assert.True(flowing <= Resume, $"{Flowing} answers took {flowing.Value.TotalSeconds:0.0} s after recovery");
    }

    /// <summary>0 dead letters, every row filled, at most one attempt per job spent on the outage, and only before the breaker opened.</summary>
    private async Task AssertOutcomeAsync(TestDatabase db)
    {
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
        Assert.Equal(Rows, await Succeeded(db));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        // A failed attempt leaves an entry in the job's errors; a job given back without spending its attempt leaves none.
        var spent = await db.DataSource.ScalarAsync<long[]>(
            "SELECT ARRAY[max(attempt), max(jsonb_array_length(errors)), count(*) FILTER (WHERE attempt > 1)] FROM llm.job");
        _output.WriteLine($"max attempt {spent[0]}, max failed attempts of a job {spent[1]}, jobs with a failed attempt {spent[2]}");
        Assert.True(spent[0] <= 2, $"a job took {spent[0]} attempts");
        Assert.True(spent[1] <= 1, $"a job spent {spent[1]} attempts on the outage");
        // Before the breaker opened, at most Threshold - 1 failed calls (one per job) spent an attempt.
        Assert.InRange(spent[2], 0, Threshold - 1);
    }

    private static Task<long> Succeeded(TestDatabase db) => db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'");

    private static Task<string> EndpointState(TestDatabase db) => db.DataSource.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'default'");

    private static Task<int> FailedProbes(TestDatabase db) => db.DataSource.ScalarAsync<int>("SELECT failed_probes FROM llm.endpoint_state WHERE endpoint = 'default'");
}
