using PgLlm.Local;

namespace PgLlm.InDatabase.Tests;

/// <summary>The in-database worker classifies failures like the .NET worker: the same fault cases, the same outcomes.</summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseFailureTests
{
    private readonly InDatabaseFixture _fixture;

    public InDatabaseFailureTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_job_that_keeps_getting_500_stops_at_max_attempts_with_every_error_kept()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(500, "upstream exploded");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(3, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal(3, _fixture.Model.RequestCount);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(3, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal(["transient", "transient", "transient"], await db.ListAsync<string>("SELECT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e"));
        Assert.Equal("model endpoint returned HTTP 500: upstream exploded", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"));
        Assert.Null(await db.ScalarAsync<string?>("SELECT output FROM items"));
    }

    [Fact]
    public async Task A_429_is_retried_no_sooner_than_its_Retry_After()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Error(429, "slow down", retryAfter: TimeSpan.FromSeconds(2))
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(2, await InDatabaseFixture.RunWorkerAsync(db));

        var requests = _fixture.Model.Requests;
        Assert.Equal(2, requests.Count);
        // The configured backoff is at most 0.1 s: only Retry-After explains a wait of 2 s.
        Assert.True(requests[1].ReceivedAt - requests[0].ReceivedAt >= TimeSpan.FromSeconds(1.9),
            $"retried after {(requests[1].ReceivedAt - requests[0].ReceivedAt).TotalSeconds:0.00} s");
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal("transient", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.Contains("HTTP 429", await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("this is not json", "the answer is not valid JSON")]
    [InlineData("[1, 2]", "the answer is not a JSON object")]
    [InlineData("{\"unrelated\": 1}", "the answer has no \"output\"")]
    [InlineData("   ", "the model returned an empty answer")]
    [InlineData("{\"output\": 7}", "invalid answer: expected string for \"output\", got 7")]
    [InlineData("{\"output\": \"a\\u0000b\"}", "the answer does not fit the columns: unsupported Unicode escape sequence")]
    public async Task A_bad_answer_writes_nothing_and_counts_as_an_invalid_attempt(string answer, string expectedError)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Json(answer)
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal("invalid", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.Contains(expectedError, await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
        Assert.Equal(InDatabaseWorkerTests.AnswerOf(_fixture.Model.Requests[1], "output"), await db.ScalarAsync<string>("SELECT output FROM items"));
        // Both calls' tokens count in the job's (the bad answer's entry carries its own); the record holds the answer written.
        Assert.True(await db.ScalarAsync<bool>(
            "SELECT input_tokens = 2 * (errors->0->>'input_tokens')::integer AND output_tokens > (errors->0->>'output_tokens')::integer " +
            "AND errors->0->>'model' = 'test-model' AND model = 'test-model' FROM llm.job"));
        Assert.Equal(await db.ScalarAsync<string>("SELECT output FROM items"), await db.ScalarAsync<string>("SELECT answer->>'output' FROM llm.job"));
    }

    [Fact]
    public async Task Keys_outside_the_task_in_an_answer_are_ignored()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json("{\"output\": \"ok\", \"input\": \"overwritten\", \"id\": 99}");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'original')");

        await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal("ok|original|1", await db.ScalarAsync<string>("SELECT output || '|' || input || '|' || id FROM items"));
    }

    [Fact]
    public async Task A_response_that_is_not_a_chat_completion_is_a_transient_failure()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Raw(200, "<html>gateway</html>")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal("transient", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
    }

    [Fact]
    public async Task A_call_that_outlives_the_timeout_is_abandoned_and_retried()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await _fixture.ConfigureAsync(db, timeoutSeconds: 1);
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) == 1
            ? ModelReply.Json(DeterministicModel.Answer(request)).WithDelay(TimeSpan.FromSeconds(6))
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal("transient", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.StartsWith("timeout: the model did not answer within 1 s", await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unreachable_endpoint_is_a_transient_failure()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // Port 1 on loopback: nothing listens there.
        await db.ExecAsync("UPDATE llm.worker_settings SET base_url = 'http://127.0.0.1:1/v1'");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(3, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.StartsWith("model endpoint unreachable: ", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(400)]
    [InlineData(404)]
    public async Task Other_4xx_fail_at_once_without_a_retry(int status)
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(status, "no such thing");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal("permanent", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.Equal($"model endpoint returned HTTP {status}: no such thing", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"));
    }

    [Fact]
    public async Task A_value_the_column_rejects_is_an_invalid_answer_and_fails_after_three()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json("{\"code\": \"far too long for three characters\"}");
        await db.ExecAsync("INSERT INTO codes (id, input) VALUES (1, 'x')");

        Assert.Equal(3, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(["invalid", "invalid", "invalid"], await db.ListAsync<string>("SELECT e->>'kind' FROM llm.job, jsonb_array_elements(errors) AS e"));
        Assert.StartsWith("the answer does not fit the columns: ", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
        Assert.Contains("(22001)", await db.ScalarAsync<string>("SELECT last_error FROM llm.job"), StringComparison.Ordinal);
        Assert.Null(await db.ScalarAsync<string?>("SELECT code FROM codes"));
    }

    [Fact]
    public async Task A_job_claimed_by_a_worker_that_died_is_rescued_after_its_lease_and_its_attempt_counts()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");
        // A worker claims and dies: its job stays running with an expired lease.
        await db.ExecAsync("SELECT * FROM llm.claim('dead-worker', 1, 0.01)");
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<bool>("SELECT lease_until < now() FROM llm.job"),
            TimeSpan.FromSeconds(5), "the dead worker's lease to expire");

        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(2, await db.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Contains("lease expired", await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(1, 2.0, 600.0, null, 1.0, 2.0)]
    [InlineData(4, 2.0, 600.0, null, 8.0, 16.0)]
    [InlineData(20, 2.0, 600.0, null, 300.0, 600.0)]
    [InlineData(1, 2.0, 600.0, 30.0, 30.0, 30.0)]
    public async Task The_backoff_is_the_dotnet_workers_between_half_and_all_of_the_doubled_delay_never_before_Retry_After(
        int attempt, double baseSeconds, double maxSeconds, double? retryAfter, double low, double high)
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);

        var delays = await db.ListAsync<double>(
            "SELECT llm.retry_delay($1, $2, $3, $4) FROM generate_series(1, 200)", attempt, (object?)retryAfter, baseSeconds, maxSeconds);

        Assert.All(delays, d => Assert.InRange(d, low, high));
        // Jittered: 200 draws are not all alike (unless Retry-After decides).
        Assert.True(low == high || delays.Distinct().Count() > 100, "no jitter");
    }
}
