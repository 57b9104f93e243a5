using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Local;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// The in-database worker shares the endpoint governor (<c>llm.endpoint_state</c>, endpoint <c>in-database</c>):
/// a wrong key or an exhausted quota stops it with no job spent, an outage opens its breaker so jobs wait
/// while one probe at a time tests the endpoint, and the rule that tells an endpoint's fault from a job's is
/// the .NET worker's.
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseGovernorTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly InDatabaseFixture _fixture;

    public InDatabaseGovernorTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_wrong_key_stops_the_endpoint_after_one_call_and_the_jobs_wait_for_the_right_key()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("UPDATE llm.worker_settings SET api_key = 'wrong-key'");
        await db.ExecAsync("INSERT INTO items (id, input) SELECT g, 'row ' || g FROM generate_series(1, 5) AS g");

        // One call meets the 401 (the local server refuses the key); the run ends there.
        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal(["pending"], await db.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        Assert.Equal(0, await db.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"));
        Assert.Equal("stopped", await db.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'in-database'"));
        Assert.StartsWith("unauthorized: HTTP 401", await db.ScalarAsync<string>("SELECT reason FROM llm.endpoint_state WHERE endpoint = 'in-database'"), StringComparison.Ordinal);
        // Stopped, a run makes no call at all.
        Assert.Equal(0, await InDatabaseFixture.RunWorkerAsync(db));

        // The right key is a changed configuration: the next run resumes by itself and drains everything.
        await db.ExecAsync("UPDATE llm.worker_settings SET api_key = $1", _fixture.Model.ApiKey);
        Assert.Equal(5, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.Equal(["succeeded"], await db.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"));
        Assert.Equal("closed", await db.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'in-database'"));
    }

    [Fact]
    public async Task An_exhausted_quota_stops_the_endpoint_until_resumed_by_hand()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var outOfQuota = 1;
        _fixture.Model.Responder = request => Volatile.Read(ref outOfQuota) == 1
            ? ModelReply.Raw(429, """{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}""")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'a'), (2, 'b')");

        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.StartsWith("quota exceeded: HTTP 429: You exceeded your current quota",
            await db.ScalarAsync<string>("SELECT reason FROM llm.endpoint_state WHERE endpoint = 'in-database' AND state = 'stopped'"), StringComparison.Ordinal);
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state <> 'pending' OR attempt > 0"));

        Volatile.Write(ref outOfQuota, 0);
        Assert.Equal("stopped", await db.ScalarAsync<string>("SELECT llm.endpoint_resume('in-database')"));
        Assert.Equal(2, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.Equal(["succeeded"], await db.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
    }

    [Fact]
    public async Task An_outage_opens_the_breaker_the_jobs_wait_one_probe_at_a_time_and_the_drain_resumes_after_it()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("UPDATE llm.worker_settings SET failure_threshold = 2, probe_seconds = 0.2, max_probe_seconds = 0.4");
        var outage = 1;
        _fixture.Model.Responder = request => Volatile.Read(ref outage) == 1
            ? ModelReply.Error(503, "The service is temporarily unavailable.")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) SELECT g, 'row ' || g FROM generate_series(1, 6) AS g");

        var run = InDatabaseFixture.RunWorkerAsync(db, runSeconds: 50);
        // The breaker opens on the second failure, and the probes that follow fail too.
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<int?>(
            "SELECT failed_probes FROM llm.endpoint_state WHERE endpoint = 'in-database' AND state = 'open'") >= 2, Bound, "probes of the open endpoint");
        var requests = _fixture.Model.Requests.OrderBy(r => r.ReceivedAt).ToList();
        // Two failures opened it; every later call is a probe, at least the probe interval after the one before.
        foreach (var (earlier, later) in requests.Skip(1).Zip(requests.Skip(2)))
        {
            Assert.True(later.ReceivedAt - earlier.ReceivedAt >= TimeSpan.FromMilliseconds(150), $"two probes {(later.ReceivedAt - earlier.ReceivedAt).TotalMilliseconds:0} ms apart");
        }

        Volatile.Write(ref outage, 0);
        await run.WaitAsync(Bound);

        Assert.Equal(["succeeded"], await db.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        Assert.Equal("closed", await db.ScalarAsync<string>("SELECT state FROM llm.endpoint_state WHERE endpoint = 'in-database'"));
        // Only the failure before the breaker opened (threshold - 1) spent an attempt.
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT sum(attempt - 1) FROM llm.job"));
    }

    [Fact]
    public async Task With_the_governor_off_a_wrong_key_fails_the_job_as_before()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("UPDATE llm.worker_settings SET api_key = 'wrong-key', governor = false");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal("permanent", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.endpoint_state WHERE endpoint = 'in-database'"));
    }

    [Theory]
    [InlineData(401, """{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}""")]
    [InlineData(403, """{"error":{"message":"forbidden"}}""")]
    [InlineData(429, """{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}""")]
    [InlineData(429, """{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}""")]
    [InlineData(408, "request timeout")]
    [InlineData(500, """{"error":{"message":"server error"}}""")]
    [InlineData(502, "bad gateway")]
    [InlineData(503, """{"error":{"message":"overloaded"}}""")]
    [InlineData(504, "gateway timeout")]
    [InlineData(529, "overloaded")]
    [InlineData(400, """{"error":{"message":"bad request"}}""")]
    [InlineData(404, "not found")]
    public async Task An_endpoint_fault_is_told_from_a_jobs_failure_by_the_dotnet_workers_rule(int status, string body)
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);
        var expected = FailureClassifier.EndpointFaultOf(new ModelEndpointException(status, "detail", responseBody: body)) switch
        {
            EndpointFault.None => null,
            EndpointFault.Outage => "outage",
            _ => "stop",
        };

        Assert.Equal(expected, await db.ScalarAsync<string?>("SELECT kind FROM llm.endpoint_fault($1, $2, NULL)", status, body));
        Assert.Equal(
            FailureClassifier.EndpointFaultOf(new HttpRequestException("connection refused")) == EndpointFault.Outage ? "outage" : null,
            await db.ScalarAsync<string?>("SELECT kind FROM llm.endpoint_fault(NULL, NULL, 'model endpoint unreachable: connection refused')"));
    }
}
