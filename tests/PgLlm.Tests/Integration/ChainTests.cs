using System.Text.Json;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// A chain (<see cref="Article"/>): the headline reads the summary another task writes, and the body both read. The
/// headline runs after the summary is written, and again when it changes; while a summary job of its row is pending
/// or running, a headline job waits without spending its attempt or calling the model.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class ChainTests
{
    private const string Summarize = "Summarize ";
    private const string HeadlineOf = "Headline of ";

    private readonly PgLlmFixture _fixture;

    public ChainTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task An_insert_fills_the_first_column_then_the_second_from_the_first()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = Answer(TimeSpan.Zero);
        await db.ExecAsync("INSERT INTO articles (id, body) VALUES (1, 'first')");
        // The headline's input (the summary) is still null: only the summary is queued.
        Assert.Equal(["public.articles:summary"], await db.ListAsync<string>("SELECT task FROM llm.job"));

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Assert.Equal(2, await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token));

        Assert.Equal("S(first)|H(S(first) for first)", await db.ScalarAsync<string>("SELECT summary || '|' || headline FROM articles WHERE id = 1"));
        Assert.Equal([Summarize + "first", HeadlineOf + "S(first) for first"], _fixture.Model.Requests.Select(r => r.UserText));
    }

    [Fact]
    public async Task An_update_of_the_base_input_calls_the_downstream_once_after_the_upstream_with_its_new_value()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // The summary takes a second: a headline job that did not wait would answer first, from the old summary.
        _fixture.Model.Responder = Answer(TimeSpan.FromSeconds(1));
        using var stop = new CancellationTokenSource();
        var worker = _fixture.CreateWorker(db).RunAsync(stop.Token);
        long last;
        try
        {
            await db.ExecAsync("INSERT INTO articles (id, body) VALUES (1, 'first')");
            await Eventually.TrueAsync(async () => await HeadlineAsync(db) == "H(S(first) for first)", "the first headline is written", TimeSpan.FromSeconds(60));
            _fixture.Model.ClearRequests();
            last = await db.ScalarAsync<long>("SELECT max(id) FROM llm.job");

            await db.ExecAsync("UPDATE articles SET body = 'second' WHERE id = 1");
            // Both tasks read the body: both are queued at once.
            Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')"));
            await Eventually.TrueAsync(
                async () => await HeadlineAsync(db) == "H(S(second) for second)"
                    && await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')") == 0,
                "the second headline is written and nothing is left to do",
                TimeSpan.FromSeconds(60));
        }
        finally
        {
            await stop.CancelAsync();
            await worker;
        }

        // One call each, the headline's after the summary's and with the new summary.
        Assert.Equal([Summarize + "second", HeadlineOf + "S(second) for second"], _fixture.Model.Requests.Select(r => r.UserText));
        // The waiting spent no attempt and recorded no failure; the summary's write found the waiting job pending and
        // added none (or, had it come while the waiting job was being looked at, a job that took its place: the
        // waiting one is then superseded, uncalled and unspent).
        Assert.Equal(
            ["public.articles:headline|succeeded|1|0", "public.articles:summary|succeeded|1|0"],
            await db.ListAsync<string>(
                "SELECT task || '|' || state || '|' || attempt || '|' || jsonb_array_length(errors) FROM llm.job WHERE id > $1 AND state <> 'superseded' ORDER BY task", last));
        Assert.Equal(0L, await db.ScalarAsync<long>(
            "SELECT count(*) FROM llm.job WHERE id > $1 AND state = 'superseded' AND (task <> 'public.articles:headline' OR attempt <> 0 OR errors <> '[]')", last));
    }

    [Fact]
    public async Task A_downstream_job_claimed_while_its_upstream_is_queued_goes_back_unspent_and_is_woken_by_the_upstreams_write()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // Both columns given: both tasks are queued, the headline first (its trigger's name sorts first).
        await db.ExecAsync("INSERT INTO articles (id, body, summary) VALUES (1, 'first', 'given')");
        Assert.Equal(["after => public.articles:summary"], await db.ListAsync<string>(
            "SELECT 'after => ' || array_to_string(after, ',') FROM llm.task WHERE cardinality(after) > 0"));
        Assert.Equal(2, (await db.ListAsync<long>("SELECT c.id FROM llm.claim('test', 10, 60) AS c")).Count);
        var headline = await db.ScalarAsync<long>("SELECT id FROM llm.job WHERE task = 'public.articles:headline'");
        var summary = await db.ScalarAsync<long>("SELECT id FROM llm.job WHERE task = 'public.articles:summary'");

        // The summary runs: the headline is held, pending again at attempt 0 with no error, due later (after at least a second).
        Assert.Equal([headline], await db.ListAsync<long>("SELECT unnest(llm.hold_for_upstreams('public.articles:headline', ARRAY[$1], ARRAY[1]))", headline));
        Assert.Equal("pending|0|0|true", await db.ScalarAsync<string>(
            "SELECT state || '|' || attempt || '|' || jsonb_array_length(errors) || '|' || (scheduled_at > now() AND scheduled_at <= now() + interval '1 minute') " +
            "FROM llm.job WHERE id = $1", headline));
        // A task with no upstream holds nothing, whatever else is queued.
        Assert.Empty(await db.ListAsync<long>("SELECT unnest(llm.hold_for_upstreams('public.articles:summary', ARRAY[$1], ARRAY[1]))", summary));

        // The summary's write-back makes the held job due now (and it is claimed, and runs, as its upstream is done).
        var states = await db.ScalarAsync<string[]>(
            "SELECT \"llm\".\"public.articles:summary:write_back\"(ARRAY[$1], ARRAY[1], ARRAY[md5(jsonb_build_object('body', 'first')::text)], " +
            "ARRAY['{\"summary\": \"S(first)\"}'::jsonb], ARRAY[1], ARRAY[1])", summary);
        Assert.Equal(["succeeded"], states);
        Assert.True(await db.ScalarAsync<bool>("SELECT scheduled_at <= now() FROM llm.job WHERE id = $1", headline));
        Assert.Equal([$"public.articles:headline:{headline}:1"], await db.ListAsync<string>(
            "SELECT c.task || ':' || c.id || ':' || c.attempt FROM llm.claim('test', 10, 60) AS c"));
        Assert.Empty(await db.ListAsync<long>("SELECT unnest(llm.hold_for_upstreams('public.articles:headline', ARRAY[$1], ARRAY[1]))", headline));
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task = 'public.articles:headline'"));
    }

    private static Task<string?> HeadlineAsync(Npgsql.NpgsqlDataSource db) =>
        db.ScalarAsync<string?>("SELECT headline FROM articles WHERE id = 1");

    /// <summary>The summary is "S(body)" (after <paramref name="summaryDelay"/>), the headline "H(what its prompt reads)".</summary>
    private static Func<ModelRequest, ModelReply> Answer(TimeSpan summaryDelay) => request =>
    {
        var text = request.UserText;
        return text.StartsWith(Summarize, StringComparison.Ordinal)
            ? ModelReply.Json(JsonSerializer.Serialize(new { summary = "S(" + text[Summarize.Length..] + ")" })).WithDelay(summaryDelay)
            : ModelReply.Json(JsonSerializer.Serialize(new { headline = "H(" + text[HeadlineOf.Length..] + ")" }));
    };
}
