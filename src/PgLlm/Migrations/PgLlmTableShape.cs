namespace PgLlm.Migrations;

/// <summary>
/// What a table's generated script expects of the table: its key, the columns its tasks read and the
/// columns they fill, with the kind of answer each target receives. Generated beside the script
/// (<see cref="PgLlmScript.Table"/>); <see cref="PgLlmMigrator"/> compares it with the database before
/// applying anything.
/// </summary>
/// <param name="Schema">The table's schema.</param>
/// <param name="Table">The table's name.</param>
/// <param name="KeyColumns">The key columns, which identify a job's row.</param>
/// <param name="Columns">
/// The key, read and target columns, with the PostgreSQL type their properties map to (for the DDL a check
/// suggests); empty when the shape comes from the task registry, which knows no types.
/// </param>
/// <param name="Tasks">The table's tasks.</param>
public sealed record PgLlmTableShape(
    string Schema,
    string Table,
    IReadOnlyList<string> KeyColumns,
    IReadOnlyList<PgLlmColumnShape> Columns,
    IReadOnlyList<PgLlmTaskShape> Tasks);

/// <summary>A key, read or target column and the PostgreSQL type its property maps to.</summary>
/// <param name="Name">The column.</param>
/// <param name="SqlType">A PostgreSQL type for it, e.g. <c>text</c> or <c>bigint</c>.</param>
public sealed record PgLlmColumnShape(string Name, string SqlType);

/// <summary>One task of a table: the columns its prompt reads and the columns its answer fills.</summary>
/// <param name="Name">The task's short name (without the table), e.g. <c>summary</c>.</param>
/// <param name="ReadColumns">The columns the prompt reads.</param>
/// <param name="Targets">The columns the answer fills.</param>
public sealed record PgLlmTaskShape(string Name, IReadOnlyList<string> ReadColumns, IReadOnlyList<PgLlmTargetShape> Targets);

/// <summary>A column an answer fills, and the kind of answer it receives.</summary>
/// <param name="Column">The column.</param>
/// <param name="Kind">
/// The answer's kind: <c>string</c>, <c>enum</c>, <c>integer</c>, <c>number</c>, <c>boolean</c>, <c>date-time</c>,
/// <c>date</c>, <c>time</c>, <c>uuid</c>, <c>object</c>, or <c>array of</c> one of them.
/// </param>
public sealed record PgLlmTargetShape(string Column, string Kind);
