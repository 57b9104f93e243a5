using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// Nulls by declaration only: a target may be answered null only when its task says AllowNull. Against an
/// endpoint that answers null wherever the request's schema allows it (as a model whose decoding follows the
/// schema may), no other target is left NULL; against one that answers null for everything, the jobs fail
/// with a clear error instead of succeeding with empty cells.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class NullAnswerTests
{
    private const string NotAllowed = "is null, and the task does not allow null (AllowNull)";

    private static readonly string[] Branches = ["anyOf", "oneOf"];

    private readonly PgLlmFixture _fixture;

    public NullAnswerTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task The_example_against_an_endpoint_answering_null_wherever_the_schema_allows_leaves_only_allow_null_targets_empty()
    {
        _fixture.Model.Responder = NullWhereTheSchemaAllows;
        var connection = await _fixture.Postgres.CreateDatabaseAsync();

        var run = await RunExampleAsync(connection);

        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("Jobs in llm.job by state: succeeded: 15", run.Output, StringComparison.Ordinal);
        await using var db = NpgsqlDataSource.Create(connection);
        // Every target without AllowNull holds a value; the two with it (image_description, taxes) were answered null.
        Assert.Equal(0L, await db.ScalarAsync<long>(
            "SELECT count(*) FROM public.user_reviews WHERE sentiment IS NULL OR review_text_es IS NULL OR emotion IS NULL OR user_review_es IS NULL " +
            "OR (full_name IS NOT NULL AND user_background IS NULL)"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM public.user_reviews WHERE image_description IS NOT NULL"));
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM public.receipts WHERE total IS NOT NULL AND taxes IS NULL"));
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task LIKE '%:image_description' AND state = 'succeeded'"));

        // The schemas the model saw: null only for the AllowNull targets.
        var nullable = _fixture.Model.Requests
            .SelectMany(r => r.Schema!.Value.GetProperty("properties").EnumerateObject())
            .Where(p => AllowsNull(p.Value))
            .Select(p => p.Name)
            .Distinct()
            .Order(StringComparer.Ordinal);
        Assert.Equal(["image_description", "taxes"], nullable);
    }

    [Fact]
    public async Task The_example_against_an_endpoint_answering_null_for_everything_fails_the_jobs_with_a_clear_error()
    {
        _fixture.Model.Responder = NullForEverything;
        var connection = await _fixture.Postgres.CreateDatabaseAsync();

        var run = await RunExampleAsync(connection);

        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("Jobs in llm.job by state: failed: 13, succeeded: 2", run.Output, StringComparison.Ordinal);
        await using var db = NpgsqlDataSource.Create(connection);
        // Only the AllowNull task succeeded; every other job failed after its three invalid answers, saying why.
        Assert.Equal(["public.user_reviews:image_description"], await db.ListAsync<string>("SELECT DISTINCT task FROM llm.job WHERE state = 'succeeded'"));
        var failures = await db.ListAsync<string>(
            "SELECT task || '|' || attempt || '|' || jsonb_array_length(errors) || '|' || (SELECT count(*) FROM jsonb_array_elements(errors) AS e WHERE e->>'kind' = 'invalid') || '|' || last_error " +
            "FROM llm.job WHERE state = 'failed' ORDER BY task, id");
        Assert.Equal(13, failures.Count);
        foreach (var failure in failures)
        {
            var parts = failure.Split('|');
            Assert.Equal(["3", "3", "3"], parts[1..4]);
            var firstTarget = parts[0] switch
            {
                "public.receipts:total_and_taxes" => "total",
                "public.user_reviews:analyze_and_translate" => "emotion",
                var task => task[(task.IndexOf(':', StringComparison.Ordinal) + 1)..],
            };
            Assert.Equal($"invalid answer: \"{firstTarget}\" {NotAllowed}", parts[4]);
        }

        Assert.Equal(0L, await db.ScalarAsync<long>(
            "SELECT count(*) FROM public.user_reviews WHERE num_nonnulls(sentiment, review_text_es, user_background, image_description, emotion, user_review_es) > 0"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM public.receipts WHERE num_nonnulls(total, taxes) > 0"));
    }

    [Fact]
    public async Task An_allow_null_target_receives_null_and_the_others_their_values()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = NullWhereTheSchemaAllows;
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('Great food, slow service')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state || coalesce(' ' || last_error, '') FROM llm.job"));
        // mood is the one AllowNull target of the task; the eight others hold the model's values.
        Assert.True(await db.ScalarAsync<bool>(
            "SELECT mood IS NULL AND num_nonnulls(stars, score, recommended, reviewed_on, tags, codes, origin, seen_at) = 8 FROM typed_reviews"));
    }

    [Fact]
    public async Task A_null_for_a_nullable_target_without_allow_null_is_an_invalid_answer_retried_then_failed()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = request =>
        {
            var answer = JsonNode.Parse(DeterministicModel.Answer(request))!.AsObject();
            answer["stars"] = null;
            return ModelReply.Json(answer.ToJsonString());
        };
        await db.ExecAsync("INSERT INTO typed_reviews (body) VALUES ('Great food, slow service')");

        await _fixture.CreateWorker(db, o =>
        {
            o.RetryBaseDelay = TimeSpan.FromMilliseconds(20);
            o.RetryMaxDelay = TimeSpan.FromMilliseconds(100);
        }).RunUntilIdleAsync();

        Assert.Equal(
            $"failed|3|invalid answer: \"stars\" {NotAllowed}",
            await db.ScalarAsync<string>("SELECT state || '|' || attempt || '|' || last_error FROM llm.job"));
        Assert.Equal(3, _fixture.Model.Requests.Count);
        Assert.True(await db.ScalarAsync<bool>("SELECT num_nonnulls(stars, score, recommended, mood, reviewed_on, tags, codes, origin, seen_at) = 0 FROM typed_reviews"));
    }

    /// <summary>The deterministic answer, with null for every target whose schema (in the request) allows null.</summary>
    private static ModelReply NullWhereTheSchemaAllows(ModelRequest request)
    {
        var answer = JsonNode.Parse(DeterministicModel.Answer(request))!.AsObject();
        foreach (var property in request.Schema!.Value.GetProperty("properties").EnumerateObject().Where(p => AllowsNull(p.Value)))
        {
            answer[property.Name] = null;
        }

        return ModelReply.Json(answer.ToJsonString());
    }

    /// <summary>Null for every target, whatever the schema says (a model that ignores it).</summary>
    private static ModelReply NullForEverything(ModelRequest request) =>
        ModelReply.Json(new JsonObject(request.Schema!.Value.GetProperty("properties").EnumerateObject()
            .Select(p => KeyValuePair.Create(p.Name, (JsonNode?)null))).ToJsonString());

    /// <summary>A "null" type (alone or in a type array), a null among an enum's values, or an anyOf/oneOf branch that allows null.</summary>
    private static bool AllowsNull(JsonElement schema)
    {
        if (schema.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        if (schema.TryGetProperty("type", out var type)
            && (type.ValueKind == JsonValueKind.String ? type.GetString() == "null"
                : type.ValueKind == JsonValueKind.Array && type.EnumerateArray().Any(t => t.ValueKind == JsonValueKind.String && t.GetString() == "null")))
        {
            return true;
        }

        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.EnumerateArray().Any(v => v.ValueKind == JsonValueKind.Null))
        {
            return true;
        }

        return Branches.Any(k => schema.TryGetProperty(k, out var branches) && branches.ValueKind == JsonValueKind.Array
            && branches.EnumerateArray().Any(AllowsNull));
    }

    /// <summary>The example's demo (migrate, insert its rows, drain, print) against a database and the fixture's endpoint.</summary>
    private async Task<(int ExitCode, string Output)> RunExampleAsync(string connection)
    {
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var example = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "Reviews", "bin", configuration, "net10.0", "Reviews.dll"));
        Assert.True(File.Exists(example), $"the example is not built: {example}");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(example);
        start.Environment["PGLLM_CONNECTION"] = connection;
        start.Environment["PGLLM_BASE_URL"] = _fixture.Model.BaseUrl.ToString();
        start.Environment["PGLLM_API_KEY"] = _fixture.Model.ApiKey;
        start.Environment["PGLLM_MODEL"] = "test-model";
        // Invalid answers are retried; short delays keep the three attempts of a failing job quick.
        start.Environment["PgLlm__Worker__RetryBaseDelay"] = "00:00:00.020";
        start.Environment["PgLlm__Worker__RetryMaxDelay"] = "00:00:00.100";

        using var process = Process.Start(start)!;
        var output = new ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { output.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { output.Enqueue(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the example did not finish within 3 minutes:\n" + string.Join("\n", output));
        }

        process.WaitForExit();
        return (process.ExitCode, string.Join("\n", output));
    }
}
