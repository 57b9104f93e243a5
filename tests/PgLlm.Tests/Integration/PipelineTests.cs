using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;
using static PgLlm.Generated.PgLlmScripts;

namespace PgLlm.Tests.Integration;

/// <summary>Rows in, model answers out: the whole pipeline against a real server and a real endpoint.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class PipelineTests
{
    private readonly PgLlmFixture _fixture;

    public PipelineTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Insert_fills_the_column_from_the_rendered_prompt()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('I love this, it is great')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        var request = Assert.Single(_fixture.Model.Requests, r => r.UserText.StartsWith("Sentiment of:", StringComparison.Ordinal));
        Assert.Equal("Sentiment of: I love this, it is great", request.UserText);
        Assert.Equal("json_schema", request.ResponseFormatType);
        Assert.True(request.Strict);
        Assert.Equal("test-model", request.Model);
        Assert.Equal(["sentiment"], request.Schema!.Value.GetProperty("required").EnumerateArray().Select(e => e.GetString()));

        // The job keeps its history: timings, attempts and the endpoint's token counts.
        Assert.Equal(
            $"succeeded|1|{DeterministicModel.CountTokens(request.UserText)}|true",
            await db.ScalarAsync<string>(
                "SELECT state || '|' || attempt || '|' || input_tokens || '|' || (output_tokens > 0 AND finished_at >= attempted_at AND attempted_at >= created_at) " +
                "FROM llm.job WHERE task = 'public.reviews:sentiment'"));
    }

    [Fact]
    public async Task The_insert_returns_before_any_model_call_and_leaves_a_pending_job()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('fine')");

        Assert.Null(await db.ScalarAsync<string?>("SELECT sentiment FROM reviews"));
        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal(
            ["pending", "pending"],
            await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY task"));
    }

    [Fact]
    public async Task Update_of_a_read_column_refreshes_the_answer()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var worker = _fixture.CreateWorker(db);
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('I love it')");
        await worker.RunUntilIdleAsync();
        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));

        await db.ExecAsync("UPDATE reviews SET body = 'This is terrible and broken'");
        await worker.RunUntilIdleAsync();

        Assert.Equal("negative", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal("negative", await db.ScalarAsync<string>("SELECT emotion FROM reviews"));
    }

    [Fact]
    public async Task Update_of_an_unrelated_column_or_to_the_same_value_makes_no_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var worker = _fixture.CreateWorker(db);
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('I love it')");
        await worker.RunUntilIdleAsync();
        var calls = _fixture.Model.RequestCount;

        await db.ExecAsync("UPDATE reviews SET title = 'A title'");
        await db.ExecAsync("UPDATE reviews SET body = body");
        await worker.RunUntilIdleAsync();

        Assert.Equal(calls, _fixture.Model.RequestCount);
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state <> 'succeeded'"));
    }

    [Fact]
    public async Task The_workers_own_write_back_does_not_enqueue_again()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('good')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        Assert.Equal(2, _fixture.Model.RequestCount);
    }

    [Fact]
    public async Task Rapid_updates_collapse_into_one_call_on_the_latest_values()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('version 0')");
        for (var i = 1; i <= 10; i++)
        {
            await db.ExecAsync("UPDATE reviews SET body = $1", $"version {i} is great");
        }

        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task = $1", Tasks.Review_sentiment));
        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var request = Assert.Single(_fixture.Model.Requests, r => r.UserText.StartsWith("Sentiment of:", StringComparison.Ordinal));
        Assert.Equal("Sentiment of: version 10 is great", request.UserText);
        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));
    }

    [Fact]
    public async Task Two_tasks_on_one_table_are_both_filled_one_of_them_with_two_columns_from_one_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('the food was good')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT emotion FROM reviews"));
        Assert.Equal("el comida fue bueno", await db.ScalarAsync<string>("SELECT body_es FROM reviews"));
        var multi = Assert.Single(_fixture.Model.Requests, r => r.UserText.StartsWith("Give the emotion", StringComparison.Ordinal));
        Assert.Equal(["emotion", "body_es"], multi.Schema!.Value.GetProperty("required").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task Composite_keys_write_each_answer_to_its_own_row()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'hammer'), (2, 1, 'apple'), (1, 2, 'saw')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        foreach (var (order, line, description) in new[] { (1, 1, "hammer"), (2, 1, "apple"), (1, 2, "saw") })
        {
            var expected = DeterministicModel.Answer(_fixture.Model.Requests.Single(r => r.UserText == "Category of " + description));
            Assert.Equal(
                System.Text.Json.JsonDocument.Parse(expected).RootElement.GetProperty("category").GetString(),
                await db.ScalarAsync<string>("SELECT category FROM line_items WHERE order_id = $1 AND line_no = $2", order, line));
        }
    }

    [Fact]
    public async Task A_task_can_name_its_own_model_and_system_prompt()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'hammer')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var request = Assert.Single(_fixture.Model.Requests);
        Assert.Equal("tiny-model", request.Model);
        Assert.Equal("Answer with one word.", request.SystemText);
        Assert.Equal(["system", "user"], request.Messages.Select(m => m.Role));
    }

    [Fact]
    public async Task A_non_public_schema_with_quoted_mixed_case_names_works()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var id = Guid.NewGuid();
        await db.ExecAsync("INSERT INTO \"CRM Data\".\"Customer Notes\" (\"NoteId\", \"NoteText\") VALUES ($1, $2)", id, "Call back on Monday about the invoice");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var request = Assert.Single(_fixture.Model.Requests);
        Assert.Equal("Summarize this note: Call back on Monday about the invoice", request.UserText);
        var summary = await db.ScalarAsync<string>("SELECT \"Summary Of \"\"Note\"\"\" FROM \"CRM Data\".\"Customer Notes\" WHERE \"NoteId\" = $1", id);
        Assert.Equal(System.Text.Json.JsonDocument.Parse(DeterministicModel.Answer(request)).RootElement.GetProperty("Summary Of \"Note\"").GetString(), summary);
        Assert.False(string.IsNullOrEmpty(summary));
    }

    [Fact]
    public async Task Two_workers_at_once_process_every_job_exactly_once()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        const int rows = 200;
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'item ' || g FROM generate_series(1, $1) AS g", rows);
        _fixture.Model.Latency = TimeSpan.FromMilliseconds(10);

        var first = _fixture.CreateWorker(db, o => o.Concurrency = 4);
        var second = _fixture.CreateWorker(db, o => o.Concurrency = 4);
        var counts = await Task.WhenAll(first.RunUntilIdleAsync(), second.RunUntilIdleAsync());

        Assert.Equal(rows, counts.Sum());
        Assert.All(counts, c => Assert.True(c > 0, "both workers should have taken jobs"));
        Assert.Equal(rows, _fixture.Model.RequestCount);
        Assert.Equal(rows, _fixture.Model.Requests.Select(r => r.UserText).Distinct().Count());
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal(
            [$"succeeded:1:{rows}"],
            await db.ListAsync<string>("SELECT state || ':' || attempt || ':' || count(*) FROM llm.job GROUP BY state, attempt"));
    }

    [Fact]
    public async Task A_rolled_back_insert_enqueues_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await using (var connection = await db.OpenConnectionAsync())
        await using (var transaction = await connection.BeginTransactionAsync())
        {
            await using var insert = new NpgsqlCommand("INSERT INTO reviews (body) VALUES ('never committed')", connection, transaction);
            await insert.ExecuteNonQueryAsync();
            await transaction.RollbackAsync();
        }

        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        Assert.Equal(0, await _fixture.CreateWorker(db).RunUntilIdleAsync());
        Assert.Equal(0, _fixture.Model.RequestCount);
    }

    [Fact]
    public async Task Migrations_applied_twice_change_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var triggers = await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgllm:%'");
        var journal = await db.ScalarAsync<long>("SELECT count(*) FROM llm.migration");

        var second = await new PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync();

        Assert.Empty(second.Applied);
        Assert.Equal(triggers, await db.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgllm:%'"));
        Assert.Equal(journal, await db.ScalarAsync<long>("SELECT count(*) FROM llm.migration"));
        // An INSERT and an UPDATE trigger for every declared task, and the three that keep edit marks for every table.
        var tables = await db.ScalarAsync<long>("SELECT count(DISTINCT (table_schema, table_name)) FROM llm.task");
        Assert.Equal(2 * await db.ScalarAsync<long>("SELECT count(*) FROM llm.task") + 3 * tables, triggers);
        Assert.True(triggers >= 10, $"only {triggers} triggers");
    }

    [Fact]
    public async Task A_row_with_a_null_input_is_not_enqueued()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'x')");
        await db.ExecAsync("DELETE FROM llm.job");
        await db.ExecAsync("ALTER TABLE line_items ALTER COLUMN description DROP NOT NULL");

        await db.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 2, NULL)");

        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
    }
}
