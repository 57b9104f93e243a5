using System.Text.Json;
using Npgsql;

namespace PgLlm.OperationsConsole;

/// <summary>
/// The console's reads. Each answers from PgLlm's indexes: the pending jobs by <c>job_pending_key</c>, the others by
/// <c>job_not_pending</c> (state, finished time) or <c>job_done_key</c> (task, row key); nothing scans the whole history.
/// </summary>
public static class ConsoleQueries
{
    /// <summary>How far back the throughput and latency charts go.</summary>
    public static readonly TimeSpan ChartWindow = TimeSpan.FromHours(24);

    /// <summary>The width of a chart's bucket.</summary>
    public static readonly TimeSpan BucketWidth = TimeSpan.FromMinutes(10);

    /// <summary>How many UTC days the tokens and cost go back (today included).</summary>
    public const int Days = 7;

    private const string TasksSql = """
        SELECT t.name, t.model, t.paused_at, t.paused_by,
               (SELECT count(*) FROM llm.job AS j WHERE j.task = t.name AND j.state = 'pending'),
               (SELECT count(*) FROM llm.job AS j WHERE j.task = t.name AND j.state = 'running'),
               (SELECT count(*) FROM llm.job AS j WHERE j.task = t.name AND j.state = 'failed'),
               (SELECT extract(epoch FROM now() - min(j.created_at))::float8 FROM llm.job AS j WHERE j.task = t.name AND j.state = 'pending'),
               (SELECT count(*) FROM llm.edited_cell AS e
                 WHERE e.table_schema = t.table_schema AND e.table_name = t.table_name AND e.column_name = ANY (t.target_columns))
          FROM llm.task AS t
         ORDER BY t.name
        """;

    /// <summary>The overview: every registered task with its figures.</summary>
    public static async Task<IReadOnlyList<ConsoleTask>> ReadOverviewAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        var coverage = await ConsoleCoverage.ReadAsync(dataSource, connection, cancellationToken).ConfigureAwait(false);
        var tasks = new List<ConsoleTask>();
        await using (var command = new NpgsqlCommand(TasksSql, connection))
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var name = reader.GetString(0);
                var rows = coverage.GetValueOrDefault(name);
                tasks.Add(new ConsoleTask(
                    name, NullableString(reader, 1), NullableTime(reader, 2), NullableString(reader, 3),
                    reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6),
                    reader.IsDBNull(7) ? null : TimeSpan.FromSeconds(Math.Max(0, reader.GetDouble(7))),
                    rows.Filled, rows.Stale, rows.TableRows, reader.GetInt64(8)));
            }
        }

        var history = await ConsoleHistory.ReadAsync(dataSource, connection, cancellationToken).ConfigureAwait(false);
        return tasks.Select(history.Complete).ToList();
    }

    /// <summary>Dead letters grouped by task and last error, the largest groups first.</summary>
    public static async Task<IReadOnlyList<ConsoleFailureGroup>> ReadFailureGroupsAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("""
            SELECT j.task, j.last_error, count(*), max(j.finished_at), (array_agg(j.id ORDER BY j.id DESC))[1:20]
              FROM llm.job AS j
             WHERE j.state = 'failed'
             GROUP BY j.task, j.last_error
             ORDER BY count(*) DESC, j.task, j.last_error
             LIMIT 200
            """);
        var groups = new List<ConsoleFailureGroup>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            groups.Add(new ConsoleFailureGroup(
                reader.GetString(0), NullableString(reader, 1), reader.GetInt64(2), NullableTime(reader, 3), reader.GetFieldValue<long[]>(4)));
        }

        return groups;
    }

    /// <summary>The ids of the dead letters of one group (task and last error).</summary>
    public static async Task<long[]> ReadFailureGroupIdsAsync(NpgsqlDataSource dataSource, string task, string? error, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand(
            "SELECT coalesce(array_agg(j.id ORDER BY j.id), '{}') FROM llm.job AS j WHERE j.state = 'failed' AND j.task = $1 AND j.last_error IS NOT DISTINCT FROM $2");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = error, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        return (long[])(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private const string JobColumns = """
        j.id, j.task, j.row_key::text, j.state::text, j.attempt, j.answer::text, j.model, j.input_tokens, j.output_tokens,
        j.estimated_cost, j.cache_hit, j.last_error, j.errors::text, j.created_at, j.attempted_at, j.finished_at
        """;

    /// <summary>
    /// Jobs of a task, at most <paramref name="limit"/>, latest first: of one row (<paramref name="rowKey"/>, JSON), or in
    /// one state, or the latest.
    /// </summary>
    public static async Task<IReadOnlyList<ConsoleJob>> SearchJobsAsync(
        NpgsqlDataSource dataSource, string task, string? state, string? rowKey, int limit = 100, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        string sql;
        if (rowKey is not null)
        {
            // One index per half: job_pending_key and job_done_key.
            sql = $"""
                SELECT * FROM (
                    SELECT {JobColumns} FROM llm.job AS j WHERE j.task = $1 AND j.row_key = $3::jsonb AND j.state = 'pending'
                    UNION ALL
                    SELECT {JobColumns} FROM llm.job AS j WHERE j.task = $1 AND j.row_key = $3::jsonb AND j.state <> 'pending') AS r
                 WHERE $2::text IS NULL OR r.state = $2
                 ORDER BY r.id DESC LIMIT $4
                """;
        }
        else if (state is "pending")
        {
            sql = $"SELECT {JobColumns} FROM llm.job AS j WHERE j.task = $1 AND j.state = 'pending' AND $2::text IS NOT NULL AND $3::text IS NULL ORDER BY j.id DESC LIMIT $4";
        }
        else if (state is not null)
        {
            sql = $"SELECT {JobColumns} FROM llm.job AS j WHERE j.state = $2 AND j.task = $1 AND $3::text IS NULL ORDER BY j.finished_at DESC NULLS FIRST LIMIT $4";
        }
        else
        {
            sql = $"SELECT {JobColumns} FROM llm.job AS j WHERE j.task = $1 AND $2::text IS NULL AND $3::text IS NULL ORDER BY j.id DESC LIMIT $4";
        }

        await using var command = dataSource.CreateCommand(sql);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = state, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = rowKey, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = limit });
        return await ReadJobsAsync(command, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Every job of one row of a task's table (every task of that table), oldest first.</summary>
    public static async Task<IReadOnlyList<ConsoleJob>> ReadRowHistoryAsync(NpgsqlDataSource dataSource, string task, string rowKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand($"""
            WITH tasks AS (SELECT array_agg(o.name) AS names FROM llm.task AS t JOIN llm.task AS o USING (table_schema, table_name) WHERE t.name = $1)
            SELECT * FROM (
                SELECT {JobColumns} FROM llm.job AS j WHERE j.task = ANY ((SELECT names FROM tasks)::text[]) AND j.row_key = $2::jsonb AND j.state = 'pending'
                UNION ALL
                SELECT {JobColumns} FROM llm.job AS j WHERE j.task = ANY ((SELECT names FROM tasks)::text[]) AND j.row_key = $2::jsonb AND j.state <> 'pending') AS r
             ORDER BY r.id
             LIMIT 1000
            """);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = rowKey });
        return await ReadJobsAsync(command, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One job by its id (none when it is not kept).</summary>
    public static async Task<IReadOnlyList<ConsoleJob>> ReadJobAsync(NpgsqlDataSource dataSource, long id, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand($"SELECT {JobColumns} FROM llm.job AS j WHERE j.id = $1");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
        return await ReadJobsAsync(command, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The tasks of the table of <paramref name="task"/>, with whether each is paused.</summary>
    public static async Task<IReadOnlyList<(string Task, bool Paused)>> ReadOverviewTasksOfTableAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand(
            "SELECT o.name, o.paused_at IS NOT NULL FROM llm.task AS t JOIN llm.task AS o USING (table_schema, table_name) WHERE t.name = $1 ORDER BY o.name");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        var tasks = new List<(string, bool)>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            tasks.Add((reader.GetString(0), reader.GetBoolean(1)));
        }

        return tasks;
    }

    /// <summary>The edited cells of one row of a task's table.</summary>
    public static async Task<IReadOnlyList<ConsoleEditedCell>> ReadEditedCellsAsync(NpgsqlDataSource dataSource, string task, string rowKey, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("""
            SELECT format('%I.%I', e.table_schema, e.table_name), e.column_name, e.edited_at, e.edited_by
              FROM llm.task AS t
              JOIN llm.edited_cell AS e ON e.table_schema = t.table_schema AND e.table_name = t.table_name
             WHERE t.name = $1 AND e.row_key = $2::jsonb
             ORDER BY e.column_name
            """);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = rowKey });
        var cells = new List<ConsoleEditedCell>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            cells.Add(new ConsoleEditedCell(reader.GetString(0), reader.GetString(1), reader.GetFieldValue<DateTimeOffset>(2), reader.GetString(3)));
        }

        return cells;
    }

    /// <summary>The key columns of a task's table (to read a bare key such as <c>42</c> as <c>{"id": 42}</c>); empty for an unknown task.</summary>
    public static async Task<IReadOnlyList<string>> ReadKeyColumnsAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT key_columns FROM llm.task WHERE name = $1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string[] ?? [];
    }

    /// <summary>The open batches, and the latest 20 finished ones.</summary>
    public static async Task<IReadOnlyList<ConsoleBatch>> ReadBatchesAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("""
            SELECT * FROM (
                SELECT b.id, b.endpoint, b.model, b.state, b.lines, b.succeeded, b.failed, b.missing, b.created_at, b.submitted_at, b.expected_by, b.cancel_requested_at
                  FROM llm.batch AS b WHERE b.state NOT IN ('done', 'failed', 'expired', 'cancelled')
                UNION
                (SELECT b.id, b.endpoint, b.model, b.state, b.lines, b.succeeded, b.failed, b.missing, b.created_at, b.submitted_at, b.expected_by, b.cancel_requested_at
                   FROM llm.batch AS b ORDER BY b.id DESC LIMIT 20)) AS b
             ORDER BY b.id DESC
            """);
        var batches = new List<ConsoleBatch>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            batches.Add(new ConsoleBatch(
                reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetInt32(4), reader.GetInt32(5),
                reader.GetInt32(6), reader.GetInt32(7), reader.GetFieldValue<DateTimeOffset>(8), NullableTime(reader, 9), NullableTime(reader, 10), NullableTime(reader, 11)));
        }

        return batches;
    }

    /// <summary>The latest entries of the action log.</summary>
    public static async Task<IReadOnlyList<ConsoleAction>> ReadActionsAsync(NpgsqlDataSource dataSource, int limit = 200, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand(
            "SELECT id, at, actor, role, action, target, detail::text FROM llm.console_action ORDER BY id DESC LIMIT $1");
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = limit });
        var actions = new List<ConsoleAction>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            actions.Add(new ConsoleAction(reader.GetInt64(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetString(2), reader.GetString(3),
                reader.GetString(4), NullableString(reader, 5), reader.GetString(6)));
        }

        return actions;
    }

    /// <summary>Reads a row key as typed in the search: a JSON object as is, else a bare value for a task with one key column.</summary>
    public static string? NormalizeRowKey(string? typed, IReadOnlyList<string> keyColumns)
    {
        ArgumentNullException.ThrowIfNull(keyColumns);
        if (string.IsNullOrWhiteSpace(typed))
        {
            return null;
        }

        var text = typed.Trim();
        try
        {
            using var document = JsonDocument.Parse(text);
            if (document.RootElement.ValueKind == JsonValueKind.Object)
            {
                return document.RootElement.GetRawText();
            }

            if (keyColumns.Count == 1)
            {
                return JsonSerializer.Serialize(new Dictionary<string, JsonElement> { [keyColumns[0]] = document.RootElement.Clone() });
            }
        }
        catch (JsonException)
        {
            if (keyColumns.Count == 1)
            {
                return JsonSerializer.Serialize(new Dictionary<string, string> { [keyColumns[0]] = text });
            }
        }

        throw new FormatException(keyColumns.Count == 0
            ? "unknown task"
            : $"the key has {keyColumns.Count} columns ({string.Join(", ", keyColumns)}): type it as a JSON object, e.g. {{\"{keyColumns[0]}\": 1, ...}}");
    }

    private static async Task<IReadOnlyList<ConsoleJob>> ReadJobsAsync(NpgsqlCommand command, CancellationToken cancellationToken)
    {
        var jobs = new List<ConsoleJob>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            jobs.Add(new ConsoleJob(
                reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetInt32(4), NullableString(reader, 5),
                NullableString(reader, 6), reader.IsDBNull(7) ? null : reader.GetInt32(7), reader.IsDBNull(8) ? null : reader.GetInt32(8),
                reader.IsDBNull(9) ? null : reader.GetDecimal(9), reader.IsDBNull(10) ? null : reader.GetBoolean(10), NullableString(reader, 11),
                reader.GetString(12), reader.GetFieldValue<DateTimeOffset>(13), NullableTime(reader, 14), NullableTime(reader, 15)));
        }

        return jobs;
    }

    private static string? NullableString(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    private static DateTimeOffset? NullableTime(NpgsqlDataReader reader, int ordinal) =>
        reader.IsDBNull(ordinal) ? null : reader.GetFieldValue<DateTimeOffset>(ordinal);
}
