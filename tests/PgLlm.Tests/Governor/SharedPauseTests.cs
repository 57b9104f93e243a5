using System.Diagnostics;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// A 429 that one worker meets pauses the endpoint's calls in every worker of the database for its Retry-After
/// (<c>llm.endpoint_state.paused_until</c>, notified), with no rate limit configured, and spends no attempt.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SharedPauseTests
{
    private const int Rows = 300;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;

    public SharedPauseTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_429_one_worker_meets_pauses_the_other_workers_calls_for_its_Retry_After_and_spends_no_attempt()
    {
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMilliseconds(20) });
        var clock = Stopwatch.StartNew();
        var requests = new List<(double At, bool Throttled)>();
        var throttled = 0;
        model.Responder = request =>
        {
            // The very first request is throttled for 3 s; every other is answered.
            var throttle = Interlocked.Exchange(ref throttled, 1) == 0;
            lock (requests)
            {
                requests.Add((clock.Elapsed.TotalSeconds, throttle));
            }

            return throttle
                ? ModelReply.Error(429, "Rate limit reached for requests per minute.", TimeSpan.FromSeconds(3))
                : ModelReply.Json(DeterministicModel.Answer(request));
        };
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, {Rows}) AS g");
        var options = TestOptions.For(model, concurrency: 4);
        options.Governor.RefreshInterval = TimeSpan.FromMilliseconds(200);

        using var stop = new CancellationTokenSource();
        using var first = Ops.Worker(db.DataSource, options);
        using var second = Ops.Worker(db.DataSource, options);
        var runs = new[] { first.RunAsync(stop.Token), second.RunAsync(stop.Token) };
        try
        {
            await Eventually.TrueAsync(
                async () => runs.Any(r => r.IsCompleted) || await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == Rows,
                "every job succeeded",
                Bound);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(runs);
        }

        List<(double At, bool Throttled)> seen;
        lock (requests)
        {
            seen = [.. requests];
        }

        var pausedAt = seen.Single(r => r.Throttled).At;
        // Calls already on their way when the 429 came may arrive just after it; then nothing until the pause ends,
        // although two workers with four calls each would send hundreds of requests in that time.
        Assert.DoesNotContain(seen, r => r.At > pausedAt + 0.5 && r.At < pausedAt + 2.9);
        Assert.Contains(seen, r => r.At >= pausedAt + 2.9);
        Assert.Equal(1, await db.DataSource.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.True(await db.DataSource.ScalarAsync<bool>("SELECT paused_until IS NOT NULL FROM llm.endpoint_state WHERE endpoint = 'default'"));
    }
}
