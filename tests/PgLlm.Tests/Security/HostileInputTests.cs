using System.Text.Json;
using PgLlm.Local;

namespace PgLlm.Tests.Security;

/// <summary>
/// Hostile names and values, written by the application role and drained by the worker's role: every name is
/// quoted, every value travels as data (never as SQL or as a template), oversized prompts fail their job with a
/// clear error, and an answer can set only the task's own columns.
/// </summary>
[Collection(SecurityGroup.Name)]
public sealed class HostileInputTests
{
    private const string Summary = "Summary 'Σ'";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);
    private static readonly string Table = SecurityFixture.HostileTable;
    private readonly SecurityFixture _fixture;

    public HostileInputTests(SecurityFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Latency = TimeSpan.Zero;
        fixture.Model.ClearRequests();
        // Answers with the prompt it was sent, so a test can see exactly what reached the model.
        fixture.Model.Responder = request => ModelReply.Json(JsonSerializer.Serialize(new Dictionary<string, string> { [Summary] = request.LastUserText }));
    }

    private static readonly string[] HostileValues =
    [
        "O'Brien said \"hi\"'); DROP TABLE reviews; --",
        "$$ $pgllm$ $fn$ END; $$ LANGUAGE sql; SELECT pg_sleep(10); --",
        "{Body} {{Summary}} {Untouched ✓} {0} { } }{",
        "\u0001\u0002\u0007\b\f\u001b[31m\u007f\t\r\n ☃ 日本語 \uFFFD Σ \u200B\uFEFF",
        "\\x00 \\u0000 \\' \\\\ %s %I %L ${x} :name @p0",
    ];

    [Fact]
    public async Task Hostile_values_reach_the_model_verbatim_and_come_back_verbatim_under_hostile_names()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var values = HostileValues;
        for (var i = 0; i < values.Length; i++)
        {
            await db.App.ExecAsync($"INSERT INTO {Table} (\"Kéy ID\", \"Body \"\"Text\"\"\") VALUES ($1, $2)", (long)i + 1, values[i]);
        }

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(["succeeded"], await db.Superuser.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        for (var i = 0; i < values.Length; i++)
        {
            // Templating is single pass: braces inside a value are not placeholders.
            Assert.Contains(_fixture.Model.Requests, r => r.LastUserText == "Summarize {this}: " + values[i]);
            Assert.Equal(
                ["Summarize {this}: " + values[i], values[i], "(null)"],
                await db.App.ListAsync<string>(
                    $"SELECT unnest(ARRAY[\"{Summary}\", \"Body \"\"Text\"\"\", coalesce(\"Untouched ✓\", '(null)')]) FROM {Table} WHERE \"Kéy ID\" = $1",
                    (long)i + 1));
        }

        Assert.Equal(1L, await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM pg_tables WHERE tablename = 'reviews'"));
    }

    [Fact]
    public async Task An_answer_that_names_other_columns_sets_only_the_tasks_own_column()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        const string injection = "x'); UPDATE reviews SET body = 'pwned'; --";
        _fixture.Model.Responder = _ => ModelReply.Json(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["Untouched ✓"] = "overwritten",
            ["Body \"Text\""] = "overwritten",
            ["Kéy ID"] = 99,
            [Summary] = injection,
            ["id"] = 5,
        }));
        await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('keep me')");
        await db.App.ExecAsync($"INSERT INTO {Table} (\"Kéy ID\", \"Body \"\"Text\"\"\", \"Untouched ✓\") VALUES (1, 'original', 'mine')");
        await db.Superuser.ExecAsync("UPDATE llm.job SET state = 'skipped' WHERE task LIKE 'public.reviews:%'");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(
            ["1", "original", "mine", injection],
            await db.App.ListAsync<string>($"SELECT unnest(ARRAY[\"Kéy ID\"::text, \"Body \"\"Text\"\"\", \"Untouched ✓\", \"{Summary}\"]) FROM {Table}"));
        Assert.Equal(1L, await db.App.ScalarAsync<long>($"SELECT count(*) FROM {Table}"));
        Assert.Equal("keep me", await db.App.ScalarAsync<string>("SELECT body FROM reviews"));
    }

    [Fact]
    public async Task A_one_megabyte_value_fails_its_job_with_a_clear_error_and_the_rest_of_the_batch_runs()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var huge = string.Concat(Enumerable.Repeat("It's \"big\" $$ {Body} ", 1024 * 1024 / 21 + 1))[..(1024 * 1024)];
        await db.App.ExecAsync($"INSERT INTO {Table} (\"Kéy ID\", \"Body \"\"Text\"\"\") VALUES (1, $1), (2, 'small')", huge);

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        // Default limit 256 KiB: the model is never called for the big row, its job fails at once, saying why.
        Assert.Equal(1, _fixture.Model.RequestCount);
        Assert.Equal("failed|1|permanent", await db.Superuser.ScalarAsync<string>(
            "SELECT state || '|' || attempt || '|' || (errors->0->>'kind') FROM llm.job WHERE row_key = '{\"Kéy ID\": 1}'"));
        Assert.Equal(
            $"prompt too large: {huge.Length + "Summarize {this}: ".Length} bytes, more than PgLlm:Worker:MaxPromptBytes (262144); the model was not called",
            await db.Superuser.ScalarAsync<string>("SELECT last_error FROM llm.job WHERE row_key = '{\"Kéy ID\": 1}'"));
        Assert.Equal("succeeded", await db.Superuser.ScalarAsync<string>("SELECT state FROM llm.job WHERE row_key = '{\"Kéy ID\": 2}'"));
        Assert.Equal(huge, await db.App.ScalarAsync<string>($"SELECT \"Body \"\"Text\"\"\" FROM {Table} WHERE \"Kéy ID\" = 1"));
        Assert.Null(await db.App.ScalarAsync<string?>($"SELECT \"{Summary}\" FROM {Table} WHERE \"Kéy ID\" = 1"));

        // Raise the limit, re-drive the dead letter (an owner's operation), and the same job runs.
        Assert.Equal(1, await db.Owner.ScalarAsync<int>("SELECT llm.retry_failed()"));
        using var again = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker, o => o.MaxPromptBytes = 2 * 1024 * 1024).RunUntilIdleAsync(again.Token);

        Assert.Equal("succeeded", await db.Superuser.ScalarAsync<string>("SELECT state FROM llm.job WHERE row_key = '{\"Kéy ID\": 1}'"));
        Assert.Equal("Summarize {this}: " + huge, await db.App.ScalarAsync<string>($"SELECT \"{Summary}\" FROM {Table} WHERE \"Kéy ID\" = 1"));
    }
}
