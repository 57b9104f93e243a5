using PgLlm.Failures;
using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Queue;
using PgLlm.Templates;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// The in-database worker validates answers by the .NET worker's rules: every case of Data/answer-cases.json
/// goes through AnswerValidator and through llm.check_answer (the function the in-database worker calls),
/// against the generator's schema of the task 'typed', and must get the expected verdict from both, with
/// the same message and the same converted answer.
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class AnswerValidationParityTests(InDatabaseFixture fixture)
{
    [Fact]
    public async Task Every_answer_case_gets_the_same_verdict_message_and_conversion_from_both_workers()
    {
        await using var dataSource = await fixture.CreateDatabaseAsync(configure: false);
        var task = await TypedTaskAsync(dataSource);
        var cases = AnswerCases.Load();
        Assert.True(cases.Count >= 40, $"only {cases.Count} answer cases");

        var problems = new List<string>();
        await using var connection = await dataSource.OpenConnectionAsync();
        foreach (var (name, text, valid) in cases)
        {
            var dotnet = ValidateInDotNet(task, text);
            var database = await ValidateInDatabaseAsync(connection, task, text, dotnet.Answer);
            if (dotnet.Problem is null != valid)
            {
                problems.Add($"{name}: AnswerValidator says {dotnet.Problem ?? "valid"}");
            }

            if (database.Problem is null != valid)
            {
                problems.Add($"{name}: llm.check_answer says {database.Problem ?? "valid"}");
            }

            // The JSON parsers word their errors differently; every other message must be the same.
            var parserMessage = dotnet.Problem?.StartsWith("the answer is not valid JSON", StringComparison.Ordinal) == true;
            if (!parserMessage && dotnet.Problem != database.Problem)
            {
                problems.Add($"{name}: messages differ: AnswerValidator '{dotnet.Problem}', llm.check_answer '{database.Problem}'");
            }

            if (valid && !database.SameAnswer)
            {
                problems.Add($"{name}: converted answers differ: AnswerValidator {dotnet.Answer}, llm.check_answer {database.Answer}");
            }
        }

        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public async Task The_worker_writes_a_converted_answer_and_fails_one_that_breaks_the_schema_as_invalid()
    {
        await using var dataSource = await fixture.CreateDatabaseAsync();
        fixture.Model.Responder = null;
        fixture.Model.Latency = TimeSpan.Zero;
        var answers = new Queue<string>(
        [
            // Out of [Range(1, 5)]: no column would reject 7, the schema does.
            AnswerCases.Base(("stars", 7)),
            // 4.0 is the integer 4, " Needs_Review " the enum member needs_review.
            AnswerCases.Base(("stars", 4.0m), ("verdict", " Needs_Review "), ("place", new JsonObject { ["City"] = "Lyon", ["Zip"] = null, ["Street"] = "x" })),
        ]);
        fixture.Model.Responder = _ => Local.ModelReply.Json(answers.Dequeue());
        await dataSource.ExecAsync("INSERT INTO typed_answers (id, body) VALUES (1, 'fine')");

        Assert.Equal(2, await InDatabaseFixture.RunWorkerAsync(dataSource));

        Assert.Equal("succeeded", await dataSource.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal("invalid", await dataSource.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        Assert.Equal("invalid answer: expected integer from 1 to 5 for \"stars\", got 7", await dataSource.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"));
        Assert.Equal("4|needs_review|{\"Zip\": null, \"City\": \"Lyon\"}",
            await dataSource.ScalarAsync<string>("SELECT stars || '|' || verdict || '|' || place FROM typed_answers"));
    }

    private static (string? Answer, string? Problem) ValidateInDotNet(TaskDefinition task, string text)
    {
        try
        {
            return (AnswerValidator.Validate(task, text), null);
        }
        catch (InvalidAnswerException ex)
        {
            return (null, ex.Message);
        }
    }

    private static async Task<(string? Answer, string? Problem, bool SameAnswer)> ValidateInDatabaseAsync(
        NpgsqlConnection connection, TaskDefinition task, string text, string? expected)
    {
        await using var command = new NpgsqlCommand(
            "SELECT c.answer::text, c.problem, coalesce(c.answer = $4::jsonb, false) FROM llm.check_answer($1::json, $2, $3) AS c", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task.JsonSchema.GetRawText() });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. task.TargetColumns] });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = text });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)expected ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.IsDBNull(0) ? null : reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.GetBoolean(2));
    }

    /// <summary>The task 'typed' as the registry holds it: the generator's schema and target columns.</summary>
    private static async Task<TaskDefinition> TypedTaskAsync(NpgsqlDataSource dataSource)
    {
        await using var command = dataSource.CreateCommand("SELECT json_schema::text, target_columns FROM llm.task WHERE name LIKE '%:typed'");
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync(), "the task 'typed' is not in llm.task");
        using var schema = JsonDocument.Parse(reader.GetString(0));
        return new TaskDefinition("typed", PromptTemplate.Parse("Judge {Body}"), null, schema.RootElement.Clone(), null, 3,
            reader.GetFieldValue<string[]>(1), "inputs", "complete");
    }
}
