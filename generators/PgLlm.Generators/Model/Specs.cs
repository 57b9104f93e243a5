namespace PgLlm.Generators.Model;

// The generator's model: only strings, primitives and equatable arrays, so that an edit which
// changes nothing structural compares equal and regenerates nothing.

/// <summary>A type marked [LlmTable] with everything the emitter needs.</summary>
internal sealed record TableSpec(
    string TypeDisplayName,
    string Schema,
    string Table,
    EquatableArray<string> KeyColumns,
    EquatableArray<TaskSpec> Tasks,
    EquatableArray<ColumnSpec> Columns);

/// <summary>A key, read or target column and the PostgreSQL type its property maps to (for the DDL a table check suggests).</summary>
internal sealed record ColumnSpec(string Name, string SqlType);

/// <summary>One model call that fills one or more columns of a row.</summary>
/// <param name="Name">Short name, unique on the table (the target column, or the task's Name).</param>
/// <param name="Prompt">The template with placeholders rewritten to column names.</param>
/// <param name="ReadColumns">Columns the prompt reads, in first-use order.</param>
/// <param name="RequiredColumns">Read columns that must be non-null for a job to be enqueued (today: all of them, as in the reference's WHEN clauses).</param>
/// <param name="ImageColumns">Read columns marked [LlmImage]: sent as image content parts, not text.</param>
/// <param name="After">The tasks of the table whose targets this one reads, directly or through others (its upstreams), in declaration order: its jobs wait for theirs.</param>
/// <param name="Tier">How its jobs reach the model (LlmTier): the normal path, or the batch tier (priority 2, the provider's Batch API).</param>
internal sealed record TaskSpec(
    string Name,
    string Prompt,
    string? SystemPrompt,
    string? Model,
    int MaxAttempts,
    double? Temperature,
    int? MaxOutputTokens,
    EquatableArray<string> ReadColumns,
    EquatableArray<string> RequiredColumns,
    EquatableArray<string> ImageColumns,
    EquatableArray<TargetSpec> Targets,
    EquatableArray<string> After = default,
    TierMode Tier = TierMode.Live);

/// <summary>A column the model's answer fills, with the JSON schema (a compact JSON text) its value must match.</summary>
/// <param name="Kind">What the answer is, as the runtime's table check names it (<c>string</c>, <c>integer</c>, <c>array of string</c>...).</param>
/// <param name="Overwrite">When the write-back may replace the cell's value (LlmOverwrite: a person's edit is kept by default).</param>
internal sealed record TargetSpec(string Column, string Schema, string Kind, OverwriteMode Overwrite = OverwriteMode.IfUnedited);

/// <summary>The values of PgLlm.LlmOverwrite, which the generator reads as numbers.</summary>
internal enum OverwriteMode
{
    /// <summary>Written unless someone other than PgLlm changed the cell (llm.edited_cell).</summary>
    IfUnedited = 0,

    /// <summary>Written only while the cell is NULL.</summary>
    Never = 1,

    /// <summary>Always written.</summary>
    Always = 2,
}

/// <summary>The values of PgLlm.LlmTier, which the generator reads as numbers.</summary>
internal enum TierMode
{
    /// <summary>The normal path: jobs at priority 0, a sleeping worker woken.</summary>
    Live = 0,

    /// <summary>The batch tier: jobs at priority 2, which only the batch worker collects.</summary>
    Batch = 1,
}

/// <summary>A diagnostic to report, held without Roslyn objects except its descriptor.</summary>
internal sealed record DiagnosticInfo(string Id, LocationInfo? Location, EquatableArray<string> Arguments);

/// <summary>A source location that compares by value.</summary>
internal sealed record LocationInfo(string FilePath, int Start, int Length, int StartLine, int StartCharacter, int EndLine, int EndCharacter);

/// <summary>Which table a type maps to, and where it says so: for the check that no two types map to one table.</summary>
internal sealed record TableClaim(string Schema, string Table, string TypeName, LocationInfo? Location);

/// <summary>What parsing one [LlmTable] type produced: a spec when it is valid, its table, and diagnostics.</summary>
internal sealed record ParseResult(TableSpec? Table, TableClaim? Claim, EquatableArray<DiagnosticInfo> Diagnostics);
