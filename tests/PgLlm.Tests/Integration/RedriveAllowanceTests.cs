namespace PgLlm.Tests.Integration;

/// <summary>
/// A job that failed of bad answers and was re-driven (llm.retry_failed) gets a fresh allowance of bad
/// answers, while its error history stays.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class RedriveAllowanceTests
{
    private const string TaskName = "public.reviews:sentiment";

    private readonly PgLlmFixture _fixture;

    public RedriveAllowanceTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_re_driven_job_gets_three_new_bad_answers_before_it_fails_again()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('fine')");
        Assert.Equal(5, await db.ScalarAsync<int>("SELECT max_attempts FROM llm.task WHERE name = $1", TaskName));

        // Three bad answers: failed (a model that keeps answering badly rarely recovers).
        Assert.Equal(["pending", "pending", "failed"], await BadAnswersAsync(db, 3));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.retry_failed($1)", TaskName));

        // Re-driven: three more, not one.
        Assert.Equal(["pending", "pending", "failed"], await BadAnswersAsync(db, 3));
        Assert.Equal(
            7,
            await db.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job WHERE task = $1", TaskName));
    }

    /// <summary>Claims the task's job and fails it with a bad answer, <paramref name="count"/> times; the states it went to.</summary>
    private static async Task<List<string>> BadAnswersAsync(Npgsql.NpgsqlDataSource db, int count)
    {
        var states = new List<string>();
        for (var i = 0; i < count; i++)
        {
            states.Add(await db.ScalarAsync<string>(
                "SELECT llm.fail(c.id, c.attempt, 'invalid answer: not JSON', 0, 'invalid') FROM llm.claim('test', 1, 60, ARRAY[$1], NULL) AS c",
                TaskName));
        }

        return states;
    }
}
