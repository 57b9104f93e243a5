using System.Text.Json;
using Npgsql;

namespace PgLlm.Planning;

/// <summary>A registered task as the plan reads it (<c>llm.task</c>).</summary>
/// <param name="Name">The task's name.</param>
/// <param name="Model">The model it names; null for the worker's default.</param>
/// <param name="DefinitionHash">Its current definition hash.</param>
/// <param name="Prompt">Its current prompt template.</param>
/// <param name="SystemPrompt">Its current system prompt.</param>
/// <param name="JsonSchema">The JSON schema of its answer.</param>
/// <param name="ImageColumns">Read columns sent as images: left out of a prompt's length (their tokens are the provider's own count).</param>
internal sealed record PlannedTask(
    string Name, string? Model, string DefinitionHash, string Prompt, string? SystemPrompt, JsonElement JsonSchema, IReadOnlyList<string> ImageColumns)
{
    public static async Task<List<PlannedTask>> ReadAsync(NpgsqlDataSource dataSource, string? task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT name, model, definition_hash, prompt, system_prompt, json_schema::text, image_columns FROM llm.task WHERE $1::text IS NULL OR name = $1 ORDER BY name");
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)task ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        var tasks = new List<PlannedTask>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            using var schema = JsonDocument.Parse(reader.GetString(5));
            tasks.Add(new PlannedTask(
                reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.GetString(2), reader.GetString(3),
                reader.IsDBNull(4) ? null : reader.GetString(4), schema.RootElement.Clone(), reader.GetFieldValue<string[]>(6)));
        }

        return tasks;
    }
}
