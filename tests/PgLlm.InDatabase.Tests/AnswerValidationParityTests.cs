using System.Text.Json;
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
