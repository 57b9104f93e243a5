using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using NpgsqlTypes;
using PgLlm.Templates;

namespace PgLlm.Planning;

/// <summary>The measured length of a task's prompts over a sample of its stale rows.</summary>
/// <param name="AverageCharacters">The average characters of a prompt under the current definition (system prompt and rendered template).</param>
/// <param name="CharactersPerToken">The characters per token the sampled rows' own jobs show under the definitions that wrote them; null when none recorded tokens.</param>
/// <param name="RatioJobs">The jobs behind <paramref name="CharactersPerToken"/>.</param>
internal sealed record PromptLength(double AverageCharacters, double? CharactersPerToken, long RatioJobs)
{
    /// <summary>
    /// Renders the current definition's prompt for up to <paramref name="sample"/> stale rows of <paramref name="task"/>,
    /// and the same rows under the definition that wrote them (<c>llm.task_definition</c>), set against the input tokens
    /// their jobs recorded (<c>llm.row_version.job_id</c>; first attempt, not from the cache).
    /// </summary>
    public static async Task<PromptLength> MeasureAsync(NpgsqlDataSource dataSource, PlannedTask task, int sample, CancellationToken cancellationToken)
    {
        var written = await WrittenByAsync(dataSource, task.Name, sample, cancellationToken).ConfigureAwait(false);
        var inputs = await ReadInputsAsync(dataSource, task.Name, [.. written.Keys], cancellationToken).ConfigureAwait(false);
        var definitions = await DefinitionsAsync(dataSource, task.Name, cancellationToken).ConfigureAwait(false);
        var current = PromptTemplate.Parse(task.Prompt);
        double characters = 0, oldCharacters = 0, oldTokens = 0;
        long ratioJobs = 0;
        foreach (var (key, row) in inputs)
        {
            var values = WithoutImages(row, task.ImageColumns);
            characters += Characters(current, task.SystemPrompt, values);
            var (hash, tokens) = written[key];
            if (tokens is { } recorded && hash is not null && definitions.TryGetValue(hash, out var old))
            {
                oldCharacters += Characters(old.Prompt, old.SystemPrompt, values);
                oldTokens += recorded;
                ratioJobs++;
            }
        }

        return new PromptLength(
            inputs.Count == 0 ? 0 : characters / inputs.Count,
            ratioJobs > 0 && oldTokens > 0 && oldCharacters > 0 ? oldCharacters / oldTokens : null,
            ratioJobs);
    }

    /// <summary>A prompt's characters as the model receives them: the system message and the rendered user message.</summary>
    internal static int Characters(PromptTemplate template, string? systemPrompt, JsonElement values) =>
        (systemPrompt?.Length ?? 0) + template.Render(values).Length;

    /// <summary>The inputs without the image columns' values (a URL or bytea as text is no measure of an image's tokens).</summary>
    private static JsonElement WithoutImages(JsonElement values, IReadOnlyList<string> imageColumns)
    {
        if (imageColumns.Count == 0 || JsonNode.Parse(values.GetRawText()) is not JsonObject inputs)
        {
            return values;
        }

        foreach (var column in imageColumns)
        {
            inputs.Remove(column);
        }

        return JsonSerializer.SerializeToElement(inputs);
    }

    /// <summary>The stale rows sampled: for each, the definition that wrote it and the input tokens its job recorded.</summary>
    private static async Task<Dictionary<string, (string? Hash, int? Tokens)>> WrittenByAsync(
        NpgsqlDataSource dataSource, string task, int sample, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT p.row_key::text, v.definition_hash, j.input_tokens FROM llm.plan_rows($1, 'stale', $2) AS p " +
            "LEFT JOIN llm.row_version AS v ON v.task = $1 AND v.row_key = p.row_key " +
            "LEFT JOIN llm.job AS j ON j.id = v.job_id AND j.state = 'succeeded' AND j.attempt = 1 AND j.cache_hit IS NOT TRUE");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = sample });
        var rows = new Dictionary<string, (string?, int?)>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows[reader.GetString(0)] = (reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetInt32(2));
        }

        return rows;
    }

    /// <summary>The inputs the prompt reads, per row key (<c>llm.plan_inputs</c>), keyed by the key's text as PostgreSQL writes it.</summary>
    internal static async Task<List<(string Key, JsonElement Inputs)>> ReadInputsAsync(
        NpgsqlDataSource dataSource, string task, string[] keys, CancellationToken cancellationToken)
    {
        var rows = new List<(string, JsonElement)>();
        if (keys.Length == 0)
        {
            return rows;
        }

        await using var command = dataSource.CreateCommand("SELECT row_key::text, inputs::text FROM llm.plan_inputs($1, $2)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = keys, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            using var inputs = JsonDocument.Parse(reader.GetString(1));
            rows.Add((reader.GetString(0), inputs.RootElement.Clone()));
        }

        return rows;
    }

    private static async Task<Dictionary<string, (PromptTemplate Prompt, string? SystemPrompt)>> DefinitionsAsync(
        NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT definition_hash, prompt, system_prompt FROM llm.task_definition WHERE task = $1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        var definitions = new Dictionary<string, (PromptTemplate, string?)>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            definitions[reader.GetString(0)] = (PromptTemplate.Parse(reader.GetString(1)), reader.IsDBNull(2) ? null : reader.GetString(2));
        }

        return definitions;
    }
}
