using System.Diagnostics;
using System.Globalization;
using Xunit.Abstractions;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The endpoint's requests per minute hold for every worker of the database together: three real worker processes
/// (<c>pgllm worker</c>), each configured with the endpoint's limit of 600 a minute, drain more than two minutes of
/// jobs against one endpoint that enforces that limit itself (a 429 beyond it); it never sees more than the limit
/// + 5 % in any rolling minute, and no job spends an attempt on a 429.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SharedRateLimitTests
{
    private const int Limit = 600;
    private const int Rows = 1300;
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(3);
    private readonly PgLlmFixture _fixture;
    private readonly ITestOutputHelper _output;

    public SharedRateLimitTests(PgLlmFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    [Fact]
    public async Task Three_workers_together_send_no_more_than_the_endpoints_requests_per_minute()
    {
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMilliseconds(20) });
        var endpoint = new RollingMinute(Limit);
        model.Responder = request => endpoint.Admit(request.Model, out var retryAfter)
            ? ModelReply.Json(DeterministicModel.Answer(request))
            : ModelReply.Error(429, "Rate limit reached for requests per minute.", retryAfter);
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, {Rows}) AS g");

        var clock = Stopwatch.StartNew();
        // Each worker asks for its own model name, so the endpoint can tell them apart.
        var workers = Enumerable.Range(1, 3).Select(i => WorkerProcess.Start(
            $"limits-worker-{i}", db.ConnectionString, model.BaseUrl, model.ApiKey, 8, Settings($"limits-model-{i}"))).ToList();
        try
        {
            await UntilAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == Rows, workers);
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }
        }

        var (requests, most, throttled, models) = endpoint.Summary();
        _output.WriteLine($"{requests} requests in {clock.Elapsed.TotalSeconds:0} s; at most {most} in a rolling minute; {throttled} answered 429; by model: {string.Join(", ", models.Select(m => $"{m.Key} {m.Value}"))}");
        Assert.True(requests >= Rows, $"{requests} requests for {Rows} jobs");
        Assert.InRange(most, Limit * 0.9, Limit * 1.05);
        Assert.Equal(3, models.Count);
        Assert.All(models.Values, calls => Assert.True(calls >= 50, $"a worker made only {calls} calls"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal(1, await db.DataSource.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"));

        // What the workers were granted in the last minute is what `pgllm status` shows, with the limit.
        var (_, status) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "status");
        Assert.Contains("600 requests/min", status, StringComparison.Ordinal);
    }

    private static Dictionary<string, string> Settings(string modelName) => new()
    {
        ["Model"] = modelName,
        ["RateLimit__RequestsPerMinute"] = Limit.ToString(CultureInfo.InvariantCulture),
        ["Worker__PollInterval"] = "00:00:00.500",
        ["Worker__BatchSize"] = "8",
        ["Governor__RefreshInterval"] = "00:00:00.200",
    };

    /// <summary>Polls a condition every 100 ms, failing after the test's bound or when a worker exits.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, List<WorkerProcess> workers)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            foreach (var worker in workers)
            {
                Assert.False(worker.Process.HasExited, $"worker {worker.Id} exited: {worker.Output}");
            }

            Assert.True(DateTime.UtcNow < deadline, "the drain did not end within the bound: " + string.Join(" | ", workers.Select(w => w.Output)));
            await Task.Delay(100);
        }
    }

    /// <summary>An endpoint's own limit: every request's time is kept; beyond the limit in the last 60 s, a 429 with Retry-After.</summary>
    private sealed class RollingMinute(int limit)
    {
        private readonly Lock _lock = new();
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly List<double> _all = [];
        private readonly Queue<double> _admitted = new();
        private readonly Dictionary<string, int> _models = new(StringComparer.Ordinal);
        private int _throttled;

        public bool Admit(string model, out TimeSpan retryAfter)
        {
            lock (_lock)
            {
                var now = _clock.Elapsed.TotalSeconds;
                _all.Add(now);
                _models[model] = _models.GetValueOrDefault(model) + 1;
                while (_admitted.Count > 0 && _admitted.Peek() <= now - 60)
                {
                    _admitted.Dequeue();
                }

                if (_admitted.Count >= limit)
                {
                    _throttled++;
                    retryAfter = TimeSpan.FromSeconds(_admitted.Peek() + 60 - now);
                    return false;
                }

                _admitted.Enqueue(now);
                retryAfter = TimeSpan.Zero;
                return true;
            }
        }

        /// <summary>All requests, the most in any rolling 60 s, how many were answered 429, and the requests per model.</summary>
        public (int Requests, int Most, int Throttled, Dictionary<string, int> Models) Summary()
        {
            lock (_lock)
            {
                var most = 0;
                var end = 0;
                for (var start = 0; start < _all.Count; start++)
                {
                    while (end < _all.Count && _all[end] < _all[start] + 60)
                    {
                        end++;
                    }

                    most = Math.Max(most, end - start);
                }

                return (_all.Count, most, _throttled, new Dictionary<string, int>(_models, StringComparer.Ordinal));
            }
        }
    }
}
