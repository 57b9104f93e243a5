using System.Text.Json;
using Npgsql;

namespace PgLlm.Migrations;

/// <summary>
/// Compares what tables' tasks expect (<see cref="PgLlmTableShape"/>) with the database's catalog: each table
/// exists, with its key columns, every column a task reads, and every target column, of a type that can
/// hold the task's answers (what the generated write-back's <c>jsonb_populate_record</c> can turn the
/// answer into). Each problem is one line naming the table and column, ending with the DDL that fixes it.
/// The migrator runs it before applying the queue's and tables' scripts; the worker runs it before a
/// task's first model call (and again now and then) so a schema that drifted costs no call.
/// </summary>
internal static class TableCheck
{
    private const string ArrayOf = AnswerKinds.ArrayOf;

    /// <summary>
    /// One query for all tables: each table's relkind (null when missing) and its columns with their type
    /// (a domain's base type) and, for an array, its element type.
    /// </summary>
    /// <remarks>
    /// The last column says whether the declared key is unique: a primary key or a valid, whole-table unique index (no
    /// expression, no predicate) whose columns are all key columns. Without it one answer could be written to several rows.
    /// </remarks>
    private const string CatalogQuery = """
        SELECT s.ord, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
               bt.typname::text, bt.typcategory::text, et.typname::text, et.typcategory::text,
               EXISTS (SELECT 1 FROM pg_catalog.pg_index AS i
                        WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
                          AND (SELECT array_agg(ka.attname::text) FROM unnest(i.indkey::int2[]) AS ik(n)
                                 JOIN pg_catalog.pg_attribute AS ka ON ka.attrelid = c.oid AND ka.attnum = ik.n)
                              <@ ARRAY(SELECT k.name FROM unnest($3::text[], $4::bigint[]) AS k(name, ord) WHERE k.ord = s.ord))
          FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(schema_name, table_name, ord)
          LEFT JOIN pg_catalog.pg_namespace AS n ON n.nspname = s.schema_name
          LEFT JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = s.table_name
          LEFT JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_type AS bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
          LEFT JOIN pg_catalog.pg_type AS et ON et.oid = bt.typelem AND bt.typcategory = 'A'
        """;

    /// <summary>The problems found, one readable line each; empty when every table is as its tasks expect.</summary>
    public static async Task<IReadOnlyList<string>> ProblemsAsync(NpgsqlConnection connection, IReadOnlyList<PgLlmTableShape> tables, CancellationToken cancellationToken)
    {
        if (tables.Count == 0)
        {
            return [];
        }

        var found = tables.Select(_ => (Kind: (string?)null, UniqueKey: false, Columns: new Dictionary<string, Column>(StringComparer.Ordinal))).ToArray();
        await using (var command = new NpgsqlCommand(CatalogQuery, connection))
        {
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tables.Select(t => t.Schema).ToArray() });
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tables.Select(t => t.Table).ToArray() });
            // Each table's key columns, flattened: the names, and the ordinal of the table each belongs to.
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = tables.SelectMany(t => t.KeyColumns).ToArray() });
            command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = tables.SelectMany((t, i) => t.KeyColumns.Select(_ => (long)i + 1)).ToArray() });
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var index = (int)reader.GetInt64(0) - 1;
                if (reader.IsDBNull(1))
                {
                    continue;
                }

                found[index].Kind = reader.GetString(1);
                found[index].UniqueKey = reader.GetBoolean(8);
                if (!reader.IsDBNull(2))
                {
                    found[index].Columns[reader.GetString(2)] = new Column(
                        reader.GetString(3), reader.GetString(4), reader.GetString(5),
                        reader.IsDBNull(6) ? null : reader.GetString(6), reader.IsDBNull(7) ? null : reader.GetString(7));
                }
            }
        }

        var problems = new List<Problem>();
        for (var i = 0; i < tables.Count; i++)
        {
            Check(tables[i], found[i].Kind, found[i].UniqueKey, found[i].Columns, problems);
        }

        return problems.Count == 0 ? [] : await WriteAsync(connection, problems, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The answer kind of one property of a task's JSON schema (the generator names the same kinds from C# types).</summary>
    public static string KindOf(JsonElement schema)
    {
        var type = schema.TryGetProperty("type", out var t) ? t : default;
        var name = type.ValueKind switch
        {
            JsonValueKind.String => type.GetString(),
            JsonValueKind.Array => type.EnumerateArray().Select(e => e.GetString()).FirstOrDefault(s => s != "null"),
            _ => null,
        };
        switch (name)
        {
            case "string":
                if (schema.TryGetProperty("enum", out _))
                {
                    return "enum";
                }

                return schema.TryGetProperty("format", out var format) && format.GetString() is "date-time" or "date" or "time" or "uuid"
                    ? format.GetString()!
                    : "string";
            case "array":
                var items = schema.TryGetProperty("items", out var i) ? KindOf(i) : "string";
                return ArrayOf + (items.StartsWith(ArrayOf, StringComparison.Ordinal) ? "array" : items);
            case "integer" or "number" or "boolean" or "object":
                return name;
            default:
                return "object";
        }
    }

    private static void Check(PgLlmTableShape table, string? relkind, bool uniqueKey, Dictionary<string, Column> columns, List<Problem> problems)
    {
        var at = new[] { table.Schema, table.Table };
        if (relkind is null)
        {
            // Without the columns' types (the worker knows only the registry's names) no CREATE TABLE is guessed.
            problems.Add(table.Columns.Count == 0
                ? new Problem(at, "table is missing (dropped or renamed since it was migrated?)", [])
                : new Problem(at, "table is missing", CreateTable(table)));
            return;
        }

        if (relkind is not ("r" or "p"))
        {
            problems.Add(new Problem(at, "is not a table (PgLlm's triggers and write-back need a table)", []));
            return;
        }

        var typeOf = table.Columns.ToDictionary(c => c.Name, c => c.SqlType, StringComparer.Ordinal);
        foreach (var key in table.KeyColumns.Where(k => !columns.ContainsKey(k)))
        {
            problems.Add(new Problem(at, $"key column {{0}} is missing", [AddColumn(typeOf.GetValueOrDefault(key, "text"))], [key]));
        }

        if (!uniqueKey && table.KeyColumns.All(columns.ContainsKey))
        {
            var names = table.KeyColumns.ToArray();
            var list = string.Join(", ", names.Select((_, i) => "{" + i + "}"));
            problems.Add(new Problem(at, $"key ({list}) is not unique (no primary key or unique index on it), so one answer could be written to several rows",
                [$"ADD PRIMARY KEY ({list})"], names));
        }

        var readers = table.Tasks
            .SelectMany(t => t.ReadColumns.Select(c => (Column: c, Task: t.Name)))
            .Where(r => !table.KeyColumns.Contains(r.Column) && !columns.ContainsKey(r.Column))
            .Where(r => !table.Tasks.Any(t => t.Targets.Any(x => x.Column == r.Column)))
            .GroupBy(r => r.Column, StringComparer.Ordinal);
        foreach (var read in readers)
        {
            var tasks = read.Select(r => r.Task).Distinct().ToList();
            problems.Add(new Problem(at, $"column {{0}} (read by task{(tasks.Count > 1 ? "s" : string.Empty)} {string.Join(", ", tasks)}) is missing",
                [AddColumn(typeOf.GetValueOrDefault(read.Key, "text"))], [read.Key]));
        }

        foreach (var task in table.Tasks)
        {
            foreach (var target in task.Targets)
            {
                var what = $"column {{0}} (target of task {task.Name}, {target.Kind})";
                // The property's own type when the generator gave it (a long is a bigint), else the kind's.
                var type = typeOf.GetValueOrDefault(target.Column) ?? AnswerKinds.SqlTypeOf(target.Kind);
                if (!columns.TryGetValue(target.Column, out var column))
                {
                    problems.Add(new Problem(at, what + " is missing", [AddColumn(type)], [target.Column]));
                }
                else if (!Holds(column, target.Kind))
                {
                    problems.Add(new Problem(at, $"{what} is {column.Format}, which cannot hold {Article(target.Kind)} answer",
                        [$"ALTER COLUMN {{0}} TYPE {type} USING {{0}}::{type}"], [target.Column]));
                }
            }
        }
    }

    /// <summary>Whether a column of this type can hold every answer of the kind.</summary>
    private static bool Holds(Column column, string kind)
    {
        if (column.TypeName is "json" or "jsonb")
        {
            return true;
        }

        if (kind.StartsWith(ArrayOf, StringComparison.Ordinal))
        {
            var element = kind[ArrayOf.Length..];
            return column.Category == "A" && column.ElementName is not null && element is not ("object" or "array")
                && Holds(new Column(column.Format, column.ElementName, column.ElementCategory!, null, null), element);
        }

        return kind switch
        {
            "string" => column.Category == "S",
            "enum" => column.Category is "S" or "E",
            "integer" => column.Category == "S" || column.TypeName is "int2" or "int4" or "int8" or "numeric" or "float4" or "float8",
            "number" => column.Category == "S" || column.TypeName is "numeric" or "float4" or "float8",
            "boolean" => column.Category == "S" || column.TypeName == "bool",
            "date-time" => column.Category == "S" || column.TypeName is "timestamptz" or "timestamp",
            "date" => column.Category == "S" || column.TypeName is "date" or "timestamptz" or "timestamp",
            "time" => column.Category == "S" || column.TypeName is "time" or "timetz",
            "uuid" => column.Category == "S" || column.TypeName == "uuid",
            "object" => column.Category == "C",
            _ => false,
        };
    }

    private static string Article(string kind) => kind[0] is 'a' or 'e' or 'i' or 'o' or 'u' ? "an " + kind : "a " + kind;

    /// <summary>An <c>ALTER TABLE</c> action adding the problem's column (<c>{0}</c>).</summary>
    private static string AddColumn(string type) => "ADD COLUMN {0} " + type;

    /// <summary>A CREATE TABLE of the record's columns: the keys, the columns read, the targets.</summary>
    private static Fix CreateTable(PgLlmTableShape table)
    {
        var names = new List<string>();
        var definitions = new List<string>();
        var typeOf = table.Columns.ToDictionary(c => c.Name, c => c.SqlType, StringComparer.Ordinal);
        void Add(string name, string type)
        {
            if (!names.Contains(name))
            {
                definitions.Add("{" + names.Count + "} " + type + (table.KeyColumns.Count == 1 && table.KeyColumns[0] == name ? " PRIMARY KEY" : string.Empty));
                names.Add(name);
            }
        }

        foreach (var key in table.KeyColumns)
        {
            Add(key, typeOf.GetValueOrDefault(key, "text"));
        }

        foreach (var column in table.Columns)
        {
            Add(column.Name, column.SqlType);
        }

        foreach (var target in table.Tasks.SelectMany(t => t.Targets))
        {
            Add(target.Column, typeOf.GetValueOrDefault(target.Column) ?? AnswerKinds.SqlTypeOf(target.Kind));
        }

        if (table.KeyColumns.Count > 1)
        {
            definitions.Add("PRIMARY KEY (" + string.Join(", ", table.KeyColumns.Select(k => "{" + names.IndexOf(k) + "}")) + ")");
        }

        return new Fix("CREATE TABLE {table} (" + string.Join(", ", definitions) + ");", names);
    }

    /// <summary>Writes the problems, with every name quoted as PostgreSQL needs it (quote_ident knows its keywords).</summary>
    private static async Task<IReadOnlyList<string>> WriteAsync(NpgsqlConnection connection, List<Problem> problems, CancellationToken cancellationToken)
    {
        var names = problems.SelectMany(p => p.Table.Concat(p.Names).Concat(p.Fixes.SelectMany(f => f.Names))).Distinct(StringComparer.Ordinal).ToArray();
        var quoted = new Dictionary<string, string>(StringComparer.Ordinal);
        await using (var command = new NpgsqlCommand("SELECT n, quote_ident(n) FROM unnest($1::text[]) AS n", connection))
        {
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = names });
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                quoted[reader.GetString(0)] = reader.GetString(1);
            }
        }

        return problems.Select(p =>
        {
            var table = quoted[p.Table[0]] + "." + quoted[p.Table[1]];
            var line = table + ": " + string.Format(System.Globalization.CultureInfo.InvariantCulture, p.What, p.Names.Select(n => (object)quoted[n]).ToArray());
            return p.Fixes.Count == 0 ? line : line + ": " + string.Join(" ", p.Fixes.Select(f => f.Write(table, quoted)));
        }).ToList();
    }

    /// <summary>One column as the catalog describes it: its type as written, its (base) type's name and category, and an array's element type.</summary>
    private sealed record Column(string Format, string TypeName, string Category, string? ElementName, string? ElementCategory);

    /// <summary>A problem: what is wrong (<c>{0}</c> is its column), and the DDL that fixes it.</summary>
    private sealed record Problem(string[] Table, string What, IReadOnlyList<Fix> Fixes, IReadOnlyList<string>? Columns = null)
    {
        public Problem(string[] table, string what, Fix fix)
            : this(table, what, [fix])
        {
        }

        public Problem(string[] table, string what, string[] alterTable, string[] columns)
            : this(table, what, alterTable.Select(a => new Fix("ALTER TABLE {table} " + a + ";", columns)).ToList(), columns)
        {
        }

        public IReadOnlyList<string> Names => Columns ?? [];
    }

    /// <summary>A DDL statement with <c>{table}</c> and <c>{0}</c>... standing for the names, quoted when written.</summary>
    private sealed record Fix(string Template, IReadOnlyList<string> Names)
    {
        public string Write(string table, Dictionary<string, string> quoted) =>
            string.Format(System.Globalization.CultureInfo.InvariantCulture, Template.Replace("{table}", "{{table}}", StringComparison.Ordinal), Names.Select(n => (object)quoted[n]).ToArray())
                .Replace("{table}", table, StringComparison.Ordinal);
    }
}
