using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Worker;

namespace PgLlm.Tests.Operations;

/// <summary>A task's Model may name an endpoint: its jobs go there, with that endpoint's model and limits.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class EndpointTests
{
    private readonly PgLlmFixture _fixture;

    public EndpointTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_task_naming_an_endpoint_is_sent_there_and_the_others_to_the_default()
    {
        await using var second = await LocalModelServer.StartAsync(new LocalModelServerOptions { ApiKey = "second-key" });
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        // line_items:category declares Model = "tiny-model": here, the name of an endpoint.
        var options = Ops.Options(_fixture, o => o.Endpoints["tiny-model"] = new PgLlmEndpointOptions
        {
            BaseUrl = second.BaseUrl.ToString(),
            ApiKey = second.ApiKey,
            Model = "small-v2",
        });
        await db.DataSource.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'a chair'), (1, 2, 'a lamp')");
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");

        await new PgLlmWorker(db.DataSource, ChatClientFactory.Create(options, db.DataSource), Options.Create(options)).RunUntilIdleAsync();

        Assert.Equal(["small-v2", "small-v2"], second.Requests.Select(r => r.Model));
        Assert.Equal(["test-model"], _fixture.Model.Requests.Select(r => r.Model));
        Assert.Equal(3L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'"));
    }

    [Fact]
    public async Task A_throttled_endpoint_pauses_only_its_own_calls()
    {
        await using var slow = await LocalModelServer.StartAsync();
        slow.Responder = _ => ModelReply.Error(429, "slow down", retryAfter: TimeSpan.FromSeconds(30));
        var options = Ops.Options(_fixture, o => o.Endpoints["slow"] = new PgLlmEndpointOptions { BaseUrl = slow.BaseUrl.ToString(), ApiKey = slow.ApiKey, Model = "m" });
        using var client = ChatClientFactory.Create(options, null);
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        ChatMessage[] ask = [new(ChatRole.User, "hi")];

        var throttled = client.GetResponseAsync(ask, new ChatOptions { ModelId = "slow" }, cancel.Token);

        // The 429 reaches the client, which then pauses the slow endpoint for 30 s.
        var slowLimiter = (RateLimitingChatClient)client.GetService(typeof(RateLimitingChatClient), "slow")!;
        await Eventually.TrueAsync(() => slowLimiter.PausedUntil is not null || throttled.IsCompleted, "the slow endpoint is paused");
        Assert.Null(client.GetService<RateLimitingChatClient>()!.PausedUntil);
        var other = await client.GetResponseAsync(ask, new ChatOptions { ModelId = "test-model" }, cancel.Token);

        Assert.False(throttled.IsCompleted);
        Assert.NotNull(other.Text);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => throttled);
    }

    [Theory]
    [InlineData("fast", "fast", "fast-default")]
    [InlineData("fast/gpt-x", "fast", "gpt-x")]
    [InlineData("meta-llama/Llama-3", null, "meta-llama/Llama-3")]
    [InlineData("gpt-4o", null, "gpt-4o")]
    public void Model_names_resolve_to_an_endpoint_and_a_model(string requested, string? endpoint, string model)
    {
        using var inner = new EndpointRouterChatClient(
            ChatClientFactory.Create(Ops.Options(_fixture)),
            new Dictionary<string, (IChatClient, string?)> { ["fast"] = (ChatClientFactory.Create(Ops.Options(_fixture)), "fast-default") });

        Assert.Equal((endpoint, model), inner.Resolve(requested));
    }
}
