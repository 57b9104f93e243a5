using System.Collections.Generic;
using System.Linq;
using Microsoft.CodeAnalysis;

namespace PgLlm.Generators;

/// <summary>
/// Every diagnostic the generator reports. IDs are never reused: a retired ID stays here as a comment.
/// Error where the generated SQL would be wrong, Warning where it is legal but suspicious.
/// </summary>
internal static class DiagnosticDescriptors
{
    private const string Category = "PgLlm";
    // The one place the help links are made. It must start with the RepositoryUrl of Directory.Build.props, the
    // repository the packages name (tests/PgLlm.Package.Tests checks every descriptor's link against it).
    private const string HelpBase = "https://github.com/pgllm/pgllm/blob/main/docs/diagnostics.md#";

    public static readonly DiagnosticDescriptor UnknownPlaceholder = Create(
        "PGLLM001",
        "Unknown placeholder",
        "The prompt placeholder '{{{0}}}' names no property or column of '{1}'",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor TaskReadsItsTarget = Create(
        "PGLLM002",
        "Task writes a column it reads",
        "Task '{0}' writes column '{1}', which its prompt also reads: every answer would trigger the task again",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor NoKey = Create(
        "PGLLM003",
        "Table has no key",
        "'{0}' has no key: mark the key properties with [Key] or name one 'Id', so results can be written back to their row",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor UnknownTarget = Create(
        "PGLLM004",
        "Unknown target",
        "Task '{0}' targets '{1}', which names no property or column of '{2}'",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor MalformedTemplate = Create(
        "PGLLM005",
        "Malformed braces in a prompt",
        "The prompt of task '{0}' is malformed at offset {1}: {2}",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor NoPlaceholder = Create(
        "PGLLM006",
        "Prompt has no placeholder",
        "The prompt of task '{0}' reads no column, so every row gets the same answer and updates never refresh it",
        DiagnosticSeverity.Warning);

    public static readonly DiagnosticDescriptor DuplicateTaskName = Create(
        "PGLLM007",
        "Two tasks with one name on a table",
        "Two tasks on '{0}' are both named '{1}': give one a distinct Name",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor TargetIsKey = Create(
        "PGLLM008",
        "Task writes a key column",
        "Task '{0}' writes key column '{1}': a key identifies the row the answer belongs to and cannot be a target",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor InvalidArgument = Create(
        "PGLLM009",
        "Invalid attribute value",
        "{0}",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor UnmappableType = Create(
        "PGLLM010",
        "Target type cannot be mapped",
        "Property '{0}' of type '{1}' cannot be filled by a model: {2}",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor DuplicateTable = Create(
        "PGLLM011",
        "Two types map to one table",
        "'{0}' and '{1}' both map to table {2}: declare each table on one type",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor InvalidIdentifier = Create(
        "PGLLM012",
        "Invalid or over-long identifier",
        "{0}",
        DiagnosticSeverity.Error);

    // PGLLM013 (retired): "Task reads a column another task writes", a warning that the two ran in no set order.
    // Such a task now runs after the other (a chain); a cycle of them is PGLLM017.

    public static readonly DiagnosticDescriptor InvalidImage = Create(
        "PGLLM014",
        "Invalid image input",
        "{0}",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor AllowNullNotATarget = Create(
        "PGLLM015",
        "AllowNull names something that is not a target",
        "Task '{0}' allows null for '{1}', which is not one of its targets ({2})",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor AllowNullOnNonNullable = Create(
        "PGLLM016",
        "AllowNull on a property that cannot hold null",
        "Task '{0}' allows null for '{1}', but its type '{2}' cannot hold null: make the property nullable or take it out of AllowNull",
        DiagnosticSeverity.Warning);

    public static readonly DiagnosticDescriptor TasksInCycle = Create(
        "PGLLM017",
        "Tasks read each other's targets in a cycle",
        "Task '{0}' is in a cycle of tasks that read each other's targets ({1}; each arrow: writes a column the next reads): each would wait for the one before it, so none could run",
        DiagnosticSeverity.Error);

    public static readonly DiagnosticDescriptor OverwriteNotATarget = Create(
        "PGLLM018",
        "OverwriteAlways or OverwriteNever names something that is not a target",
        "Task '{0}' lists '{2}' in {1}, {3}",
        DiagnosticSeverity.Error);

    private static readonly Dictionary<string, DiagnosticDescriptor> ById = new[]
    {
        UnknownPlaceholder, TaskReadsItsTarget, NoKey, UnknownTarget, MalformedTemplate,
        NoPlaceholder, DuplicateTaskName, TargetIsKey, InvalidArgument, UnmappableType,
        DuplicateTable, InvalidIdentifier, InvalidImage, AllowNullNotATarget,
        AllowNullOnNonNullable, TasksInCycle, OverwriteNotATarget,
    }.ToDictionary(d => d.Id);

    public static DiagnosticDescriptor Get(string id) => ById[id];

    private static DiagnosticDescriptor Create(string id, string title, string message, DiagnosticSeverity severity) =>
        new(id, title, message, Category, severity, isEnabledByDefault: true, helpLinkUri: HelpBase + id.ToLowerInvariant());
}
