using Microsoft.Extensions.AI;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Operations;

/// <summary>Requests and tokens per minute are shared by concurrent calls; a 429 pauses every call instead of spending attempts.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class RateLimitTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public RateLimitTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    private IChatClient Client(Action<PgLlmRateLimitOptions> configure) =>
        ChatClientFactory.Create(Ops.Options(_fixture, o => configure(o.RateLimit)));

    private static Task<ChatResponse> AskAsync(IChatClient client, string text, CancellationToken cancellationToken) =>
        client.GetResponseAsync([new ChatMessage(ChatRole.User, text)], new ChatOptions { ModelId = "test-model" }, cancellationToken);

    [Fact]
    public async Task Requests_beyond_the_per_minute_limit_wait_for_the_window()
    {
        using var client = Client(r => r.RequestsPerMinute = 2);
        using var timeout = new CancellationTokenSource(Bound);

        await Task.WhenAll(AskAsync(client, "one", timeout.Token), AskAsync(client, "two", timeout.Token));
        using var third = new CancellationTokenSource();
        var waiting = AskAsync(client, "three", third.Token);
        // The window is a minute long: the third request waits in the limiter's queue, unsent.
        var limiter = client.GetService<RateLimitingChatClient>()!;
        await Eventually.TrueAsync(() => limiter.QueuedPermits > 0 || waiting.IsCompleted, "the third request is queued");
        Assert.False(waiting.IsCompleted);
        Assert.Equal(2, _fixture.Model.RequestCount);

        await third.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        Assert.Equal(2, _fixture.Model.RequestCount);
    }

    [Fact]
    public async Task A_call_waits_until_the_token_budget_covers_its_estimate()
    {
        // About 80 tokens per call (320 characters); 100 tokens per minute leave room for one.
        using var client = Client(r => r.TokensPerMinute = 100);
        var prompt = new string('x', 320);
        using var timeout = new CancellationTokenSource(Bound);

        await AskAsync(client, prompt, timeout.Token);
        using var second = new CancellationTokenSource();
        var waiting = AskAsync(client, prompt, second.Token);
        var limiter = client.GetService<RateLimitingChatClient>()!;
        var estimate = RateLimitingChatClient.EstimateTokens([new ChatMessage(ChatRole.User, prompt)], null);
        await Eventually.TrueAsync(() => limiter.QueuedPermits >= estimate || waiting.IsCompleted, "the second call's tokens wait in the queue");
        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, _fixture.Model.RequestCount);

        await second.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }

    [Fact]
    public async Task A_429_pauses_every_call_through_the_client_for_its_Retry_After()
    {
        var throttled = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref throttled) == 1
            ? ModelReply.Error(429, "slow down", retryAfter: TimeSpan.FromSeconds(1))
            : ModelReply.Json("{\"ok\": true}");
        using var client = Client(_ => { });
        using var timeout = new CancellationTokenSource(Bound);

        var first = AskAsync(client, "first", timeout.Token);
        var limiter = client.GetService<RateLimitingChatClient>()!;
        await Eventually.TrueAsync(() => limiter.PausedUntil is not null || first.IsCompleted, "the 429 paused the client");
        Assert.False(first.IsCompleted);

        // Sent while the client is paused: it must wait for the pause too.
        var second = AskAsync(client, "second", timeout.Token);
        await Task.WhenAll(first, second);

        var requests = _fixture.Model.Requests;
        Assert.Equal(3, requests.Count);
        Assert.All(requests.Skip(1), r => Assert.True(r.ReceivedAt - requests[0].ReceivedAt >= TimeSpan.FromSeconds(0.95), "a call went out during the pause"));
        Assert.Equal("{\"ok\": true}", (await first).Text);
    }

    [Fact]
    public async Task A_429_does_not_spend_the_jobs_attempt()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) <= 2
            ? ModelReply.Error(429, "slow down")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await Ops.Worker(db.DataSource, Ops.Options(_fixture, o => o.RateLimit.ThrottleBackoff = TimeSpan.FromMilliseconds(100))).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(3, _fixture.Model.RequestCount);
        Assert.Equal("succeeded", await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(1, await db.DataSource.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Equal(0, await db.DataSource.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job"));
    }

    [Fact]
    public async Task A_429_that_outlasts_the_resends_becomes_a_failed_attempt_retried_after_Retry_After()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var calls = 0;
        _fixture.Model.Responder = request => Interlocked.Increment(ref calls) <= 2
            ? ModelReply.Error(429, "slow down", retryAfter: TimeSpan.FromMilliseconds(300))
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await Ops.Worker(db.DataSource, Ops.Options(_fixture, o => o.RateLimit.ThrottleRetries = 1)).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(3, _fixture.Model.RequestCount);
        Assert.Equal("succeeded", await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(2, await db.DataSource.ScalarAsync<int>("SELECT attempt FROM llm.job"));
        Assert.Contains("429", await db.DataSource.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
    }

    [Fact]
    public void Token_estimates_count_characters_and_the_output_allowance()
    {
        var estimate = RateLimitingChatClient.EstimateTokens([new ChatMessage(ChatRole.User, new string('x', 400))], new ChatOptions { MaxOutputTokens = 50 });

        Assert.Equal(100 + 8 + 50, estimate);
    }
}
