using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Worker;

namespace PgLlm.Tests.Operations;

/// <summary>The optional answer cache: off by default; when on, identical requests cost one call.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class AnswerCacheTests
{
    private readonly PgLlmFixture _fixture;

    public AnswerCacheTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    private static PgLlmWorker Worker(TestDatabase db, PgLlmOptions options) =>
        new(db.DataSource, ChatClientFactory.Create(options, db.DataSource), Options.Create(options));

    [Fact]
    public async Task Identical_inputs_are_answered_from_the_cache_with_zero_tokens()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var options = Ops.Options(_fixture, o =>
        {
            o.AnswerCache.Enabled = true;
            o.Worker.Concurrency = 1; // concurrent identical calls may both miss
        });
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'same'), (2, 'same'), (3, 'other')");

        await Worker(db, options).RunUntilIdleAsync();

        Assert.Equal(2, _fixture.Model.RequestCount);
        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT count(DISTINCT output) FROM flaky WHERE input = 'same'"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE input_tokens = 0 AND output_tokens = 0"));
        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT sum(hits)::bigint FROM llm.answer_cache"));
    }

    [Fact]
    public async Task The_cache_is_off_by_default()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var options = Ops.Options(_fixture, o => o.Worker.Concurrency = 1);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'same'), (2, 'same')");

        await Worker(db, options).RunUntilIdleAsync();

        Assert.Equal(2, _fixture.Model.RequestCount);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.answer_cache"));
    }

    [Fact]
    public async Task Answers_that_are_not_JSON_objects_and_expired_entries_are_not_reused()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = _ => ModelReply.Json("not json");
        var cacheOptions = new PgLlmAnswerCacheOptions { Enabled = true, TimeToLive = TimeSpan.FromMilliseconds(200) };
        using var client = new AnswerCacheChatClient(ChatClientFactory.Create(Ops.Options(_fixture)), db.DataSource, cacheOptions);
        ChatMessage[] ask = [new(ChatRole.User, "question")];

        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });
        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });
        Assert.Equal(2, _fixture.Model.RequestCount);

        _fixture.Model.Responder = _ => ModelReply.Json("{\"a\": 1}");
        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });
        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });
        Assert.Equal(3, _fixture.Model.RequestCount);
        await Eventually.TrueAsync(
            async () => await db.DataSource.ScalarAsync<bool>("SELECT bool_and(created_at < now() - interval '200 milliseconds') FROM llm.answer_cache"),
            "the cached answer is older than its time to live");
        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });
        Assert.Equal(4, _fixture.Model.RequestCount);
        // Another model is another key.
        await client.GetResponseAsync(ask, new ChatOptions { ModelId = "other" });
        Assert.Equal(5, _fixture.Model.RequestCount);
    }

    [Fact]
    public async Task A_streamed_answer_is_stored_whole_and_serves_streamed_and_plain_requests()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = _ => ModelReply.Json("{\"a\": 1}");
        using var client = new AnswerCacheChatClient(ChatClientFactory.Create(Ops.Options(_fixture)), db.DataSource, new PgLlmAnswerCacheOptions { Enabled = true });
        ChatMessage[] ask = [new(ChatRole.User, "streamed question")];

        var streamed = await client.GetStreamingResponseAsync(ask, new ChatOptions { ModelId = "m" }).ToChatResponseAsync();
        var again = await client.GetStreamingResponseAsync(ask, new ChatOptions { ModelId = "m" }).ToChatResponseAsync();
        var plain = await client.GetResponseAsync(ask, new ChatOptions { ModelId = "m" });

        Assert.Equal(1, _fixture.Model.RequestCount);
        Assert.Equal("{\"a\": 1}", streamed.Text);
        Assert.Equal(streamed.Text, again.Text);
        Assert.Equal(streamed.Text, plain.Text);
        Assert.Equal(0, plain.Usage?.InputTokenCount);
        Assert.Equal(2L, await db.DataSource.ScalarAsync<long>("SELECT hits FROM llm.answer_cache"));
    }
}
