using System.Collections.Concurrent;
using System.Text.Json;
using Npgsql;
using PgLlm.Migrations;
using PgLlm.Templates;

namespace PgLlm.Queue;

/// <summary>The worker's cached view of <c>llm.task</c>, reloaded when migrations change it.</summary>
internal sealed class TaskRegistry : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly SemaphoreSlim _loadLock = new(1, 1);
    private volatile Dictionary<string, TaskDefinition> _tasks = new Dictionary<string, TaskDefinition>();
    private volatile bool _stale = true;

    /// <summary>Set once a load completed: until then, a caller that finds the cache not stale (another is loading it) loads too.</summary>
    private volatile bool _loaded;

    public TaskRegistry(NpgsqlDataSource dataSource) => _dataSource = dataSource;

    public void Dispose() => _loadLock.Dispose();

    /// <summary>Marks the cache stale (a migration announced a change).</summary>
    public void Invalidate() => _stale = true;

    /// <summary>Finds a task, reloading the registry once if it is unknown or stale.</summary>
    public async ValueTask<TaskDefinition?> FindAsync(string name, CancellationToken cancellationToken)
    {
        if (!_stale && _tasks.TryGetValue(name, out var task))
        {
            return task;
        }

        await ReloadAsync(cancellationToken).ConfigureAwait(false);
        return _tasks.GetValueOrDefault(name);
    }

    /// <summary>Every registered task, reloading the registry first if it is stale.</summary>
    public async ValueTask<IReadOnlyDictionary<string, TaskDefinition>> AllAsync(CancellationToken cancellationToken)
    {
        if (_stale || !_loaded)
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
        }

        return _tasks;
    }

    /// <summary>
    /// The table's shape as one task sees it (the registry knows no SQL types of read columns: a missing
    /// one is suggested as <c>text</c>); each target's kind comes from its property in the JSON schema.
    /// </summary>
    private static PgLlmTableShape ShapeOf(string name, string schema, string table, string[] keys, string[] reads, string[] targets, JsonElement jsonSchema)
    {
        var prefix = schema + "." + table + ":";
        var shortName = name.StartsWith(prefix, StringComparison.Ordinal) ? name[prefix.Length..] : name;
        var properties = jsonSchema.TryGetProperty("properties", out var p) ? p : default;
        var shapes = targets.Select(t => new PgLlmTargetShape(
            t, properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(t, out var property) ? TableCheck.KindOf(property) : "string")).ToList();
        return new PgLlmTableShape(schema, table, keys, [], [new PgLlmTaskShape(shortName, reads, shapes)]);
    }

    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        await _loadLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _stale = false;
            var tasks = new Dictionary<string, TaskDefinition>(StringComparer.Ordinal);
            await using var command = _dataSource.CreateCommand(
                "SELECT name, prompt, system_prompt, json_schema::text, model, max_attempts, target_columns, " +
                "inputs_function::text, complete_function::text, temperature, max_output_tokens, image_columns, " +
                "table_schema, table_name, key_columns, read_columns, " +
                "coalesce((SELECT p.pronargs >= 8 FROM pg_catalog.pg_proc AS p WHERE p.oid = complete_function), true), " +
                // The upstream tasks (queue step 10), read so that a database not yet at that step has none.
                "ARRAY(SELECT jsonb_array_elements_text(coalesce(to_jsonb(t) -> 'after', '[]'))) FROM llm.task AS t");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var name = reader.GetString(0);
                using var schema = JsonDocument.Parse(reader.GetString(3));
                tasks[name] = new TaskDefinition(
                    name,
                    PromptTemplate.Parse(reader.GetString(1)),
                    reader.IsDBNull(2) ? null : reader.GetString(2),
                    schema.RootElement.Clone(),
                    reader.IsDBNull(4) ? null : reader.GetString(4),
                    reader.GetInt32(5),
                    reader.GetFieldValue<string[]>(6),
                    reader.GetString(7),
                    reader.GetString(8),
                    reader.IsDBNull(9) ? null : reader.GetDouble(9),
                    reader.IsDBNull(10) ? null : reader.GetInt32(10),
                    reader.GetFieldValue<string[]>(11))
                {
                    Table = ShapeOf(name, reader.GetString(12), reader.GetString(13), reader.GetFieldValue<string[]>(14), reader.GetFieldValue<string[]>(15),
                        reader.GetFieldValue<string[]>(6), schema.RootElement),
                    WriteBackTakesRecord = reader.GetBoolean(16),
                    After = reader.GetFieldValue<string[]>(17),
                };
            }

            _tasks = tasks;
            _loaded = true;
        }
        finally
        {
            _loadLock.Release();
        }
    }
}
