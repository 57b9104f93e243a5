using Microsoft.Extensions.Diagnostics.HealthChecks;
using PgLlm.Hosting;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The endpoint governor's stop: a wrong key (401) or an exhausted quota (429 insufficient_quota) stops the
/// endpoint for every worker at once, spends no attempt and dead-letters nothing; status, the health check
/// and <c>pgllm endpoint list</c> say why (key redacted); <c>pgllm endpoint resume</c> or a changed key resumes it.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class EndpointStopTests
{
    private const string WrongKey = "sk-wrong0123456789abcdefWRONG";
    private const int Concurrency = 4;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;

    public EndpointStopTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_wrong_key_stops_the_endpoint_without_dead_letters_and_it_drains_after_resume_with_the_right_key()
    {
        // The server checks no key itself: the responder plays a provider that rejects the wrong one and echoes it.
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { ApiKey = string.Empty });
        var keyIsWrong = 1;
        model.Responder = request => Volatile.Read(ref keyIsWrong) == 1
            ? ModelReply.Error(401, $"Incorrect API key provided: {WrongKey}. You can find your API key at https://platform.example/account/api-keys.")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 40) AS g");
        var wrong = Options(model, WrongKey);

        using (var timeout = new CancellationTokenSource(Bound))
        {
            // Drained until idle, the worker ends once the stopped endpoint's calls in flight are done.
            await Ops.Worker(db.DataSource, wrong).RunUntilIdleAsync(timeout.Token);
        }

        // At most the calls that were in flight when the first 401 came back; none failed, none spent an attempt.
        Assert.InRange(model.RequestCount, 1, Concurrency);
        Assert.Equal(40L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0"));
        var reason = await db.DataSource.ScalarAsync<string>("SELECT state || ': ' || reason FROM llm.endpoint_state WHERE endpoint = 'default'");
        Assert.StartsWith("stopped: unauthorized: HTTP 401: Incorrect API key provided: [redacted]", reason, StringComparison.Ordinal);

        // Another worker (same wrong key) claims nothing and calls nothing.
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, wrong).RunUntilIdleAsync(timeout.Token);
        }

        Assert.InRange(model.RequestCount, 1, Concurrency);

        // `pgllm worker --until-idle` says so and exits 1: its drain could not do the work.
        var wrongCli = Ops.Configuration(_fixture, new Dictionary<string, string?> { ["PgLlm:BaseUrl"] = model.BaseUrl.ToString(), ["PgLlm:ApiKey"] = WrongKey });
        var (drainExit, drain) = await Ops.RunAsync(wrongCli, db.ConnectionString, "worker", "--until-idle");
        Assert.Equal(1, drainExit);
        Assert.Contains("error: endpoint default is stopped (unauthorized: HTTP 401: Incorrect API key provided: [redacted]", drain, StringComparison.Ordinal);
        Assert.DoesNotContain(WrongKey, drain, StringComparison.Ordinal);
        Assert.InRange(model.RequestCount, 1, Concurrency);

        // Visible: the health check, status (text and JSON) and the endpoint list, the key redacted everywhere.
        var health = await new PgLlmHealthCheck(db.DataSource, Microsoft.Extensions.Options.Options.Create(wrong)).CheckHealthAsync(new HealthCheckContext());
        Assert.Equal(HealthStatus.Unhealthy, health.Status);
        Assert.StartsWith("endpoint default stopped: unauthorized: HTTP 401: Incorrect API key provided: [redacted]", health.Description, StringComparison.Ordinal);
        var configuration = Ops.Configuration(_fixture);
        var (jsonExit, json) = await Ops.RunAsync(configuration, db.ConnectionString, "status", "--json");
        Assert.Equal(0, jsonExit);
        Assert.Contains("\"state\": \"stopped\"", json, StringComparison.Ordinal);
        Assert.Contains("unauthorized: HTTP 401", json, StringComparison.Ordinal);
        var (_, text) = await Ops.RunAsync(configuration, db.ConnectionString, "status");
        Assert.Contains("Endpoint default: stopped", text, StringComparison.Ordinal);
        var (listExit, list) = await Ops.RunAsync(configuration, db.ConnectionString, "endpoint", "list");
        Assert.Equal(0, listExit);
        Assert.Contains("Endpoint default: stopped", list, StringComparison.Ordinal);
        Assert.Contains("pgllm endpoint resume default", list, StringComparison.Ordinal);
        Assert.DoesNotContain(WrongKey, health.Description + json + text + list, StringComparison.Ordinal);
        Assert.DoesNotContain(WrongKey, await db.DataSource.ScalarAsync<string>("SELECT string_agg(s::text, '') FROM llm.endpoint_state AS s"), StringComparison.Ordinal);

        // An unknown endpoint is one line and exit 1; the known one resumes.
        var (unknownExit, unknown) = await Ops.RunAsync(configuration, db.ConnectionString, "endpoint", "resume", "nope");
        Assert.Equal(1, unknownExit);
        Assert.Contains("unknown endpoint 'nope'. Known endpoints: default", unknown, StringComparison.Ordinal);
        var (resumeExit, resumed) = await Ops.RunAsync(configuration, db.ConnectionString, "endpoint", "resume", "default");
        Assert.Equal(0, resumeExit);
        Assert.Contains("Resumed endpoint default (was stopped)", resumed, StringComparison.Ordinal);

        Volatile.Write(ref keyIsWrong, 0);
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, Options(model, model.ApiKey + "right-key")).RunUntilIdleAsync(timeout.Token);
        }

        Assert.Equal(40L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND attempt = 1"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal("closed", await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'default'"));
    }

    [Fact]
    public async Task An_exhausted_quota_stops_the_endpoint_and_a_changed_key_resumes_it_at_the_next_start()
    {
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { ApiKey = string.Empty });
        var quotaLeft = 0;
        model.Responder = request => Volatile.Read(ref quotaLeft) == 0
            ? ModelReply.Raw(429, """{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}""")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 20) AS g");

        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, Options(model, "first-account-key")).RunUntilIdleAsync(timeout.Token);
        }

        // The rate limiter does not resend an out-of-quota 429: one call per runner at most.
        Assert.InRange(model.RequestCount, 1, Concurrency);
        Assert.Equal(20L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0"));
        Assert.StartsWith(
            "stopped: quota exceeded: HTTP 429: You exceeded your current quota",
            await db.DataSource.ScalarAsync<string>("SELECT state || ': ' || reason FROM llm.endpoint_state WHERE endpoint = 'default'"),
            StringComparison.Ordinal);

        // The same configuration stays stopped; a worker started with another key resumes it.
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, Options(model, "first-account-key")).RunUntilIdleAsync(timeout.Token);
        }

        Assert.InRange(model.RequestCount, 1, Concurrency);
        Volatile.Write(ref quotaLeft, 1);
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, Options(model, "second-account-key")).RunUntilIdleAsync(timeout.Token);
        }

        Assert.Equal(20L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND attempt = 1"));
        Assert.Equal("closed: resumed: configuration changed", await db.DataSource.ScalarAsync<string>("SELECT state || ': ' || reason FROM llm.endpoint_state WHERE endpoint = 'default'"));
    }

    private static PgLlmOptions Options(LocalModelServer model, string apiKey)
    {
        var options = TestOptions.For(model, Concurrency);
        options.ApiKey = apiKey;
        options.Worker.BatchSize = 8;
        options.Governor.RefreshInterval = TimeSpan.FromMilliseconds(200);
        return options;
    }
}
