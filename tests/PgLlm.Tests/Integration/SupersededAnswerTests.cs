using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// Rows edited while their call is in flight: the old answer is not written, and settling it costs no
/// second call when a newer job of the row and task already has the row's current inputs.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SupersededAnswerTests
{
    private const int Rows = 12;

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private readonly PgLlmFixture _fixture;

    public SupersededAnswerTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task An_answer_superseded_after_the_newer_job_succeeded_enqueues_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // The calls for the first values take 3 s; those for the edited values answer at once, so the
        // newer job succeeds while the older call is still in flight.
        _fixture.Model.Responder = request => ModelReply.Json(DeterministicModel.Answer(request))
            .WithDelay(request.UserText.Contains("old", StringComparison.Ordinal) ? TimeSpan.FromSeconds(3) : TimeSpan.Zero);
        using var stop = new CancellationTokenSource();
        var drain = _fixture.CreateWorker(db, o => o.Concurrency = 4 * Rows).RunAsync(stop.Token);
        try
        {
            await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'old ' || g FROM generate_series(1, $1) AS g", Rows);
            await WaitUntilAsync(() => Task.FromResult(CallsFor("old") == Rows));
            await db.ExecAsync("UPDATE flaky SET input = 'new ' || id");
            await WaitUntilAsync(async () => await db.ScalarAsync<long>(
                "SELECT count(*) FROM llm.job WHERE state = 'superseded'") == Rows
                && await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state IN ('pending', 'running')") == 0);
        }
        finally
        {
            await stop.CancelAsync();
            await drain;
        }

        // One call per row and values: the edited values were asked once, not again after the old answers settled.
        Assert.Equal(Rows, CallsFor("new"));
        Assert.Equal(Rows, CallsFor("old"));
        Assert.Equal(Rows, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
    }

    private int CallsFor(string word) => _fixture.Model.Requests.Count(r => r.UserText.Contains(word, StringComparison.Ordinal));

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound");
            await Task.Delay(50);
        }
    }
}
