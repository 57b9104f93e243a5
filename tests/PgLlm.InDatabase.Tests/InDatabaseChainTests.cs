using System.Text.Json;
using PgLlm.Local;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// A chain (<see cref="Article"/>) drained by the in-database worker: a headline job claimed while its row's summary
/// job is still queued goes back unspent and uncalled, and runs once, after the summary, on the new summary.
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseChainTests
{
    private const string Summarize = "Summarize ";
    private const string HeadlineOf = "Headline of ";

    private readonly InDatabaseFixture _fixture;

    public InDatabaseChainTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_downstream_job_waits_for_its_upstream_and_calls_the_model_once_with_the_new_value()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = request =>
        {
            var text = request.UserText;
            return ModelReply.Json(text.StartsWith(Summarize, StringComparison.Ordinal)
                ? JsonSerializer.Serialize(new { summary = "S(" + text[Summarize.Length..] + ")" })
                : JsonSerializer.Serialize(new { headline = "H(" + text[HeadlineOf.Length..] + ")" }));
        };
        // Both columns given: both tasks are queued, the headline's job first (its trigger's name sorts first).
        await db.ExecAsync("INSERT INTO articles (id, body, summary) VALUES (1, 'first', 'given')");
        Assert.Equal(["public.articles:headline", "public.articles:summary"], await db.ListAsync<string>("SELECT task FROM llm.job ORDER BY id"));

        Assert.Equal(2, await InDatabaseFixture.RunWorkerAsync(db));

        Assert.Equal([Summarize + "first", HeadlineOf + "S(first) for first"], _fixture.Model.Requests.Select(r => r.UserText));
        Assert.Equal("S(first)|H(S(first) for first)", await db.ScalarAsync<string>("SELECT summary || '|' || headline FROM articles WHERE id = 1"));
        Assert.Equal(
            ["public.articles:headline|succeeded|1|0", "public.articles:summary|succeeded|1|0"],
            await db.ListAsync<string>("SELECT task || '|' || state || '|' || attempt || '|' || jsonb_array_length(errors) FROM llm.job ORDER BY id"));
    }
}
