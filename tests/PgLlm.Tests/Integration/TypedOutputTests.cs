using System.Text.Json;
using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>Typed answers land in typed columns; wrong answers write nothing and say why.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class TypedOutputTests
{
    private const string Columns = "stars, score, recommended, mood, reviewed_on, tags, codes, origin, seen_at";

    private readonly PgLlmFixture _fixture;

    public TypedOutputTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Every_type_is_asked_for_by_its_schema_and_written_to_its_column()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('Great food, slow service')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state || coalesce(' ' || last_error, '') FROM llm.job"));
        var request = Assert.Single(_fixture.Model.Requests);
        Assert.Equal(0.3, request.Temperature!.Value, 3);
        Assert.Equal(300, request.MaxTokens);
        var properties = request.Schema!.Value.GetProperty("properties");
        // The OpenAI client's strict mode moves minimum, maximum and format into the description.
        // A nullable property allows null only when the task says so (AllowNull): mood does, stars does not.
        Assert.Equal("\"integer\"", properties.GetProperty("stars").GetProperty("type").GetRawText());
        Assert.Equal("1 to 5 stars\nminimum: 1\nmaximum: 5", properties.GetProperty("stars").GetProperty("description").GetString());
        Assert.Equal("""["positive","negative","neutral",null]""", System.Text.Json.Nodes.JsonNode.Parse(properties.GetProperty("mood").GetProperty("enum").GetRawText())!.ToJsonString());
        Assert.Contains("date", properties.GetProperty("reviewed_on").GetRawText(), StringComparison.Ordinal);

        // The endpoint's answer is a pure function of the request: the columns must hold exactly it.
        var answer = JsonDocument.Parse(DeterministicModel.Answer(request)).RootElement;
        await using var command = db.CreateCommand($"SELECT {Columns.Replace("mood", "mood::text", StringComparison.Ordinal)} FROM typed_reviews");
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal(answer.GetProperty("stars").GetInt32(), reader.GetInt32(0));
        Assert.InRange(reader.GetInt32(0), 1, 5);
        Assert.Equal(answer.GetProperty("score").GetDecimal(), reader.GetDecimal(1));
        Assert.Equal(answer.GetProperty("recommended").GetBoolean(), reader.GetBoolean(2));
        Assert.Equal(answer.GetProperty("mood").GetString(), reader.GetString(3));
        Assert.Equal(DateOnly.Parse(answer.GetProperty("reviewed_on").GetString()!, System.Globalization.CultureInfo.InvariantCulture), reader.GetFieldValue<DateOnly>(4));
        Assert.Equal(answer.GetProperty("tags").EnumerateArray().Select(e => e.GetString()), reader.GetFieldValue<string[]>(5));
        Assert.Equal(answer.GetProperty("codes").EnumerateArray().Select(e => e.GetInt32()), reader.GetFieldValue<int[]>(6));
        var origin = JsonDocument.Parse(reader.GetString(7)).RootElement;
        Assert.Equal(answer.GetProperty("origin").GetProperty("City").GetString(), origin.GetProperty("City").GetString());
        Assert.Equal(answer.GetProperty("origin").GetProperty("Country").GetString(), origin.GetProperty("Country").GetString());
        Assert.Equal(DateTimeOffset.Parse(answer.GetProperty("seen_at").GetString()!, System.Globalization.CultureInfo.InvariantCulture), reader.GetFieldValue<DateTimeOffset>(8));
    }

    [Fact]
    public async Task A_value_of_the_wrong_type_fails_the_attempt_names_the_field_and_writes_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json(Answer(stars: "\"four\""));
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('fine')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        // An invalid answer is retried, and the job fails after three of them (MaxAttempts is 5).
        Assert.Equal(
            "failed|3|invalid answer: expected integer for \"stars\", got \"four\"",
            await db.ScalarAsync<string>("SELECT state || '|' || attempt || '|' || last_error FROM llm.job"));
        Assert.Equal(3, _fixture.Model.RequestCount);
        Assert.True(await db.ScalarAsync<bool>($"SELECT num_nulls({Columns}) = 9 FROM typed_reviews"));
    }

    [Fact]
    public async Task A_number_outside_its_declared_range_is_rejected_before_the_write()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => ModelReply.Json(Answer(stars: "9"));
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('fine')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal(
            "failed|invalid answer: expected integer from 1 to 5 for \"stars\", got 9",
            await db.ScalarAsync<string>("SELECT state || '|' || last_error FROM llm.job"));
        Assert.True(await db.ScalarAsync<bool>($"SELECT num_nulls({Columns}) = 9 FROM typed_reviews"));
    }

    [Fact]
    public async Task A_value_the_column_rejects_writes_nothing_and_is_an_invalid_attempt()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // Valid for the schema, but the table's CHECK allows five tags at most: the write-back fails as a whole.
        _fixture.Model.Responder = _ => ModelReply.Json(Answer(tags: "[\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]"));
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('fine')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var (state, error) = await StateAndErrorAsync(db);
        Assert.Equal("failed", state);
        Assert.Contains("the answer does not fit the columns", error, StringComparison.Ordinal);
        Assert.Contains("typed_reviews_tags_check", error, StringComparison.Ordinal);
        Assert.Equal(3, await db.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job"));
        Assert.True(await db.ScalarAsync<bool>($"SELECT num_nulls({Columns}) = 9 FROM typed_reviews"));
    }

    [Fact]
    public async Task A_retry_after_a_bad_answer_writes_the_good_one()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var calls = 0;
        _fixture.Model.Responder = _ => ModelReply.Json(Interlocked.Increment(ref calls) == 1 ? Answer(mood: "\"ecstatic\"") : Answer());
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('fine')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Contains(
            "expected one of \"positive\", \"negative\", \"neutral\" for \"mood\", got \"ecstatic\"",
            await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"),
            StringComparison.Ordinal);
        Assert.Equal("4|12.50|neutral|{a,b}", await db.ScalarAsync<string>("SELECT stars || '|' || score || '|' || mood || '|' || tags::text FROM typed_reviews"));
    }

    private static async Task<(string State, string Error)> StateAndErrorAsync(NpgsqlDataSource db)
    {
        var row = await db.ScalarAsync<string>("SELECT state || '|' || last_error FROM llm.job");
        var bar = row.IndexOf('|', StringComparison.Ordinal);
        return (row[..bar], row[(bar + 1)..]);
    }

    private static string Answer(string stars = "4", string mood = "\"Neutral\"", string tags = "[\"a\", \"b\"]") =>
        $$"""
        {"stars": {{stars}}, "score": 12.50, "recommended": true, "mood": {{mood}}, "reviewed_on": "2024-05-01",
         "tags": {{tags}}, "codes": [1, 2], "origin": {"City": "Lyon", "Country": "FR"}, "seen_at": "2024-05-01T10:00:00Z"}
        """;
}
