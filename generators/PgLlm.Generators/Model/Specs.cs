namespace PgLlm.Generators.Model;

// The generator's model: only strings, primitives and equatable arrays, so that an edit which
// changes nothing structural compares equal and regenerates nothing.

/// <summary>A type marked [LlmTable] with everything the emitter needs.</summary>
internal sealed record TableSpec(
    string TypeDisplayName,
    string Schema,
    string Table,
    EquatableArray<string> KeyColumns,
    EquatableArray<TaskSpec> Tasks);

/// <summary>One model call that fills one or more columns of a row.</summary>
/// <param name="Name">Short name, unique on the table (the target column, or the task's Name).</param>
/// <param name="Prompt">The template with placeholders rewritten to column names.</param>
/// <param name="ReadColumns">Columns the prompt reads, in first-use order.</param>
/// <param name="RequiredColumns">Read columns that must be non-null for a job to be enqueued (today: all of them, as in the reference's WHEN clauses).</param>
internal sealed record TaskSpec(
    string Name,
    string Prompt,
    string? SystemPrompt,
    string? Model,
    int MaxAttempts,
    EquatableArray<string> ReadColumns,
    EquatableArray<string> RequiredColumns,
    EquatableArray<TargetSpec> Targets);

/// <summary>A column the model's answer fills, with the JSON type the answer must have.</summary>
internal sealed record TargetSpec(string Column, string JsonType, string? Description);

/// <summary>A diagnostic to report, held without Roslyn objects except its descriptor.</summary>
internal sealed record DiagnosticInfo(string Id, LocationInfo? Location, EquatableArray<string> Arguments);

/// <summary>A source location that compares by value.</summary>
internal sealed record LocationInfo(string FilePath, int Start, int Length, int StartLine, int StartCharacter, int EndLine, int EndCharacter);

/// <summary>What parsing one [LlmTable] type produced: a spec when it is valid, and diagnostics.</summary>
internal sealed record ParseResult(TableSpec? Table, EquatableArray<DiagnosticInfo> Diagnostics);
