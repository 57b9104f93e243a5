using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Text;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using PgLlm.Generators.Model;
using PgLlm.Templates;

namespace PgLlm.Generators;

public sealed partial class LlmGenerator
{
    internal const string LlmTableAttribute = "PgLlm.LlmTableAttribute";
    private const string LlmColumnAttribute = "PgLlm.LlmColumnAttribute";
    private const string LlmTaskAttribute = "PgLlm.LlmTaskAttribute";
    private const string LlmImageAttribute = "PgLlm.LlmImageAttribute";
    private const string DescriptionAttribute = "System.ComponentModel.DescriptionAttribute";
    private const string KeyAttribute = "System.ComponentModel.DataAnnotations.KeyAttribute";
    private const string ColumnAttribute = "System.ComponentModel.DataAnnotations.Schema.ColumnAttribute";
    private const int DefaultMaxAttempts = 5;
    private const int MaxIdentifierBytes = 63;

    /// <summary>Reads one [LlmTable] type into a <see cref="TableSpec"/> and its diagnostics.</summary>
    internal static class Parser
    {
        public static ParseResult Parse(GeneratorAttributeSyntaxContext context, CancellationToken cancellationToken)
        {
            var type = (INamedTypeSymbol)context.TargetSymbol;
            var diagnostics = new List<DiagnosticInfo>();
            var typeName = type.Name;
            var tableAttribute = context.Attributes[0];

            var table = tableAttribute.ConstructorArguments.Length > 0 ? tableAttribute.ConstructorArguments[0].Value as string : null;
            var schema = NamedString(tableAttribute, "Schema") ?? "public";
            if (string.IsNullOrEmpty(table) || schema.Length == 0)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, ArgumentLocation(tableAttribute, 0, cancellationToken),
                    $"[LlmTable] on '{typeName}' needs a non-empty table name and schema"));
                return new ParseResult(null, null, diagnostics.ToEquatableArray());
            }

            var claim = new TableClaim(schema, table!, type.ToDisplayString(), ToInfo(AttributeLocation(tableAttribute, cancellationToken)));
            CheckIdentifier(table!, "table name", ArgumentLocation(tableAttribute, 0, cancellationToken), diagnostics);
            if (schema != "public")
            {
                CheckIdentifier(schema, "schema name", NamedArgumentLocation(tableAttribute, "Schema", cancellationToken), diagnostics);
            }

            var columns = ReadColumns(type, cancellationToken);
            CheckImages(columns, typeName, diagnostics, cancellationToken);
            var keys = columns.Where(c => c.IsKey).ToList();
            if (keys.Count == 0)
            {
                var id = columns.FirstOrDefault(c => c.PropertyName == "Id");
                if (id is not null)
                {
                    keys.Add(id);
                }
            }

            if (keys.Count == 0)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.NoKey, AttributeLocation(tableAttribute, cancellationToken), typeName));
            }

            var keyColumns = keys.Select(k => k.ColumnName).ToList();
            var checkedColumns = new HashSet<string>();
            foreach (var key in keys)
            {
                CheckColumnName(key, checkedColumns, diagnostics, cancellationToken);
            }

            var tasks = new List<TaskSpec>();
            var promptLocations = new Dictionary<string, Location?>();
            foreach (var column in columns)
            {
                foreach (var attribute in column.Attributes.Where(a => Is(a, LlmColumnAttribute)))
                {
                    var task = ParseTask(attribute, typeName, columns, keyColumns, new[] { column.ColumnName }, checkedColumns, diagnostics, cancellationToken);
                    AddTask(task, tasks, promptLocations, attribute, typeName, diagnostics, cancellationToken);
                }
            }

            foreach (var attribute in type.GetAttributes().Where(a => Is(a, LlmTaskAttribute)))
            {
                var targets = attribute.ConstructorArguments.Length > 1 && attribute.ConstructorArguments[1].Kind == TypedConstantKind.Array
                    ? attribute.ConstructorArguments[1].Values.Select(v => v.Value as string ?? string.Empty).ToArray()
                    : Array.Empty<string>();
                var resolved = new List<string>();
                foreach (var target in targets)
                {
                    var column = Resolve(columns, target);
                    if (column is null)
                    {
                        diagnostics.Add(Diagnostic(DiagnosticDescriptors.UnknownTarget, ArgumentLocation(attribute, 1, cancellationToken),
                            NamedString(attribute, "Name") ?? string.Join("+", targets), target, typeName));
                    }
                    else
                    {
                        resolved.Add(column.ColumnName);
                    }
                }

                if (targets.Length == 0)
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, AttributeLocation(attribute, cancellationToken),
                        $"[LlmTask] on '{typeName}' names no target column: list the properties the answer fills"));
                    continue;
                }

                if (resolved.Count != targets.Length)
                {
                    continue;
                }

                var task = ParseTask(attribute, typeName, columns, keyColumns, resolved, checkedColumns, diagnostics, cancellationToken);
                AddTask(task, tasks, promptLocations, attribute, typeName, diagnostics, cancellationToken);
            }

            // A task reading what another task writes runs after it (a chain); a cycle of them is an error.
            tasks = Chains.Order(tasks, promptLocations, diagnostics);

            if (diagnostics.Any(d => DiagnosticDescriptors.Get(d.Id).DefaultSeverity == DiagnosticSeverity.Error))
            {
                return new ParseResult(null, claim, diagnostics.ToEquatableArray());
            }

            var spec = new TableSpec(
                type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat),
                schema,
                table!,
                keyColumns.ToEquatableArray(),
                tasks.ToEquatableArray(),
                UsedColumns(columns, keyColumns, tasks));
            return new ParseResult(spec, claim, diagnostics.ToEquatableArray());
        }

        private static void AddTask(TaskSpec? task, List<TaskSpec> tasks, Dictionary<string, Location?> promptLocations, AttributeData attribute, string typeName, List<DiagnosticInfo> diagnostics, CancellationToken cancellationToken)
        {
            if (task is null)
            {
                return;
            }

            if (tasks.Any(t => t.Name == task.Name))
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.DuplicateTaskName, AttributeLocation(attribute, cancellationToken), typeName, task.Name));
                return;
            }

            tasks.Add(task);
            promptLocations[task.Name] = ArgumentLocation(attribute, 0, cancellationToken);
        }

        private static TaskSpec? ParseTask(
            AttributeData attribute,
            string typeName,
            IReadOnlyList<ColumnInfo> columns,
            IReadOnlyList<string> keyColumns,
            IReadOnlyList<string> targetColumns,
            HashSet<string> checkedColumns,
            List<DiagnosticInfo> diagnostics,
            CancellationToken cancellationToken)
        {
            var name = NamedString(attribute, "Name") ?? string.Join("+", targetColumns);
            if (name.Trim().Length == 0 || !Sql.SqlWriter.IsStorable(name))
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidIdentifier, NamedArgumentLocation(attribute, "Name", cancellationToken),
                    $"The task name '{name}' on '{typeName}' is empty or contains a NUL character"));
                return null;
            }
            var prompt = attribute.ConstructorArguments.Length > 0 ? attribute.ConstructorArguments[0].Value as string : null;
            var promptLocation = ArgumentLocation(attribute, 0, cancellationToken);
            if (string.IsNullOrWhiteSpace(prompt))
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, promptLocation, $"Task '{name}' on '{typeName}' has an empty prompt"));
                return null;
            }

            var maxAttempts = NamedInt(attribute, "MaxAttempts") ?? DefaultMaxAttempts;
            if (maxAttempts < 1)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, NamedArgumentLocation(attribute, "MaxAttempts", cancellationToken),
                    $"Task '{name}' on '{typeName}': MaxAttempts must be at least 1"));
                return null;
            }

            var temperature = NamedDouble(attribute, "Temperature");
            if (temperature is { } t && (double.IsNaN(t) || t < 0 || t > 2))
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, NamedArgumentLocation(attribute, "Temperature", cancellationToken),
                    $"Task '{name}' on '{typeName}': Temperature must be between 0 and 2"));
                return null;
            }

            var maxOutputTokens = NamedInt(attribute, "MaxOutputTokens");
            if (maxOutputTokens is < 1)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, NamedArgumentLocation(attribute, "MaxOutputTokens", cancellationToken),
                    $"Task '{name}' on '{typeName}': MaxOutputTokens must be at least 1"));
                return null;
            }

            if (TierOf(attribute, name, typeName, diagnostics, cancellationToken) is not { } tier)
            {
                return null;
            }

            var tokens = TemplateSyntax.Parse(prompt!, out var error, out var errorOffset);
            if (error is not null)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.MalformedTemplate, promptLocation, name, errorOffset.ToString(System.Globalization.CultureInfo.InvariantCulture), error));
                return null;
            }

            var ok = true;
            var canonical = new StringBuilder();
            var reads = new List<ColumnInfo>();
            foreach (var token in tokens)
            {
                if (!token.IsPlaceholder)
                {
                    canonical.Append(TemplateSyntax.Escape(token.Value));
                    continue;
                }

                var column = Resolve(columns, token.Value);
                if (column is null)
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.UnknownPlaceholder, promptLocation, token.Value, typeName));
                    ok = false;
                    continue;
                }

                canonical.Append('{').Append(column.ColumnName).Append('}');
                if (!reads.Contains(column))
                {
                    reads.Add(column);
                }
            }

            var targetLocation = Is(attribute, LlmTaskAttribute) ? ArgumentLocation(attribute, 1, cancellationToken) : AttributeLocation(attribute, cancellationToken);
            var allowNull = AllowNullOf(attribute, name, columns, targetColumns, diagnostics, cancellationToken);
            if (allowNull is null)
            {
                ok = false;
                allowNull = new HashSet<string>();
            }

            var overwrite = OverwriteOf(attribute, name, typeName, columns, targetColumns, diagnostics, cancellationToken);
            if (overwrite is null)
            {
                ok = false;
                overwrite = new Dictionary<string, OverwriteMode>();
            }

            var targetSchemas = new List<TargetSpec>();
            foreach (var target in targetColumns)
            {
                var column = columns.First(c => c.ColumnName == target);
                if (column.IsImage)
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidImage, targetLocation,
                        $"Task '{name}' writes '{column.PropertyName}', which is marked [LlmImage]: an image is an input, a model answers with JSON"));
                    ok = false;
                }

                var schema = JsonSchemas.ForTarget(column.Type, allowNull.Contains(target), column.Description, column.Attributes, out var problem);
                if (schema is null)
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.UnmappableType, targetLocation, column.PropertyName,
                        column.Type.ToDisplayString(SymbolDisplayFormat.MinimallyQualifiedFormat), problem ?? "it has no JSON schema mapping"));
                    ok = false;
                }
                else
                {
                    targetSchemas.Add(new TargetSpec(column.ColumnName, schema, Sql.SqlTypes.KindOf(column.Type),
                        overwrite.TryGetValue(target, out var mode) ? mode : OverwriteMode.IfUnedited));
                }

                if (reads.Any(r => r.ColumnName == target))
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.TaskReadsItsTarget, promptLocation, name, target));
                    ok = false;
                }

                if (keyColumns.Contains(target))
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.TargetIsKey, AttributeLocation(attribute, cancellationToken), name, target));
                    ok = false;
                }
            }

            foreach (var column in reads.Concat(targetColumns.Select(t => columns.First(c => c.ColumnName == t))))
            {
                if (!CheckColumnName(column, checkedColumns, diagnostics, cancellationToken))
                {
                    ok = false;
                }
            }

            if (!ok)
            {
                return null;
            }

            if (reads.Count == 0)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.NoPlaceholder, promptLocation, name));
            }

            return new TaskSpec(
                name,
                canonical.ToString(),
                NamedString(attribute, "SystemPrompt"),
                NamedString(attribute, "Model"),
                maxAttempts,
                temperature,
                maxOutputTokens,
                reads.Select(r => r.ColumnName).ToEquatableArray(),
                reads.Select(r => r.ColumnName).ToEquatableArray(),
                reads.Where(r => r.IsImage).Select(r => r.ColumnName).ToEquatableArray(),
                targetSchemas.ToEquatableArray(),
                Tier: tier);
        }

        /// <summary>The task's tier (LlmTier, read as its number): Live unless set; null after an error (a value that is not an LlmTier).</summary>
        private static TierMode? TierOf(AttributeData attribute, string taskName, string typeName, List<DiagnosticInfo> diagnostics, CancellationToken cancellationToken)
        {
            var value = NamedInt(attribute, "Tier") ?? (int)TierMode.Live;
            if (value is < (int)TierMode.Live or > (int)TierMode.Batch)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, NamedArgumentLocation(attribute, "Tier", cancellationToken),
                    $"Task '{taskName}' on '{typeName}': Tier must be LlmTier.Live or LlmTier.Batch"));
                return null;
            }

            return (TierMode)value;
        }

        /// <summary>
        /// The target columns the task allows null for: [LlmColumn(AllowNull = true)], or the targets [LlmTask(AllowNull = [...])]
        /// names. Null after an error (a name that is not a target); a warning for a property whose type cannot hold null.
        /// </summary>
        private static HashSet<string>? AllowNullOf(
            AttributeData attribute,
            string taskName,
            IReadOnlyList<ColumnInfo> columns,
            IReadOnlyList<string> targetColumns,
            List<DiagnosticInfo> diagnostics,
            CancellationToken cancellationToken)
        {
            var result = new HashSet<string>();
            var argument = attribute.NamedArguments.Where(a => a.Key == "AllowNull").Select(a => (TypedConstant?)a.Value).FirstOrDefault();
            if (argument is not { } value)
            {
                return result;
            }

            var location = NamedArgumentLocation(attribute, "AllowNull", cancellationToken);
            var ok = true;
            if (Is(attribute, LlmColumnAttribute))
            {
                if (value.Value is true)
                {
                    result.Add(targetColumns[0]);
                }
            }
            else if (value.Kind == TypedConstantKind.Array && !value.IsNull)
            {
                foreach (var name in value.Values.Select(v => v.Value as string ?? string.Empty))
                {
                    var column = Resolve(columns, name);
                    if (column is null || !targetColumns.Contains(column.ColumnName))
                    {
                        diagnostics.Add(Diagnostic(DiagnosticDescriptors.AllowNullNotATarget, location, taskName, name,
                            string.Join(", ", targetColumns.Select(t => columns.First(c => c.ColumnName == t).PropertyName))));
                        ok = false;
                        continue;
                    }

                    result.Add(column.ColumnName);
                }
            }

            foreach (var column in columns.Where(c => result.Contains(c.ColumnName) && c.CannotHoldNull))
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.AllowNullOnNonNullable, location, taskName, column.PropertyName,
                    column.Type.ToDisplayString(SymbolDisplayFormat.MinimallyQualifiedFormat)));
            }

            return ok ? result : null;
        }

        /// <summary>
        /// The targets whose write-back is not the default (IfUnedited): [LlmColumn(Overwrite = ...)], or the targets
        /// [LlmTask(OverwriteAlways = [...], OverwriteNever = [...])] name. Null after an error (a name that is not a
        /// target, a target in both lists, a value that is not an LlmOverwrite).
        /// </summary>
        private static Dictionary<string, OverwriteMode>? OverwriteOf(
            AttributeData attribute,
            string taskName,
            string typeName,
            IReadOnlyList<ColumnInfo> columns,
            IReadOnlyList<string> targetColumns,
            List<DiagnosticInfo> diagnostics,
            CancellationToken cancellationToken)
        {
            var result = new Dictionary<string, OverwriteMode>();
            if (Is(attribute, LlmColumnAttribute))
            {
                var value = NamedInt(attribute, "Overwrite") ?? (int)OverwriteMode.IfUnedited;
                if (value is < (int)OverwriteMode.IfUnedited or > (int)OverwriteMode.Always)
                {
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidArgument, NamedArgumentLocation(attribute, "Overwrite", cancellationToken),
                        $"Task '{taskName}' on '{typeName}': Overwrite must be LlmOverwrite.IfUnedited, Never or Always"));
                    return null;
                }

                result[targetColumns[0]] = (OverwriteMode)value;
                return result;
            }

            var ok = true;
            foreach (var (list, mode) in new[] { ("OverwriteAlways", OverwriteMode.Always), ("OverwriteNever", OverwriteMode.Never) })
            {
                var argument = attribute.NamedArguments.Where(a => a.Key == list).Select(a => (TypedConstant?)a.Value).FirstOrDefault();
                if (argument is not { Kind: TypedConstantKind.Array, IsNull: false } value)
                {
                    continue;
                }

                foreach (var name in value.Values.Select(v => v.Value as string ?? string.Empty))
                {
                    var column = Resolve(columns, name);
                    var problem = column is null || !targetColumns.Contains(column.ColumnName)
                        ? "which is not one of its targets (" + string.Join(", ", targetColumns.Select(t => columns.First(c => c.ColumnName == t).PropertyName)) + ")"
                        : result.TryGetValue(column.ColumnName, out var other) && other != mode ? "which OverwriteAlways names too: name it in one list" : null;
                    if (problem is not null)
                    {
                        diagnostics.Add(Diagnostic(DiagnosticDescriptors.OverwriteNotATarget, NamedArgumentLocation(attribute, list, cancellationToken), taskName, list, name, problem));
                        ok = false;
                        continue;
                    }

                    result[column!.ColumnName] = mode;
                }
            }

            return ok ? result : null;
        }

        /// <summary>The keys, the columns tasks read and their targets, with their PostgreSQL types, in declaration order.</summary>
        private static EquatableArray<ColumnSpec> UsedColumns(IReadOnlyList<ColumnInfo> columns, IReadOnlyList<string> keyColumns, IReadOnlyList<TaskSpec> tasks) =>
            columns
                .Where(c => keyColumns.Contains(c.ColumnName) || tasks.Any(t => t.ReadColumns.Contains(c.ColumnName) || t.Targets.Any(x => x.Column == c.ColumnName)))
                .Select(c => new ColumnSpec(c.ColumnName, Sql.SqlTypes.For(c.Type)))
                .ToEquatableArray();

        /// <summary>[LlmImage] belongs on a string (a URL) or a byte[] (bytea) property.</summary>
        private static void CheckImages(IReadOnlyList<ColumnInfo> columns, string typeName, List<DiagnosticInfo> diagnostics, CancellationToken cancellationToken)
        {
            foreach (var column in columns.Where(c => c.IsImage))
            {
                var type = column.Type;
                var isUrl = type.SpecialType == SpecialType.System_String;
                var isBytes = type is IArrayTypeSymbol { ElementType.SpecialType: SpecialType.System_Byte };
                if (!isUrl && !isBytes)
                {
                    var attribute = column.Attributes.First(a => Is(a, LlmImageAttribute));
                    diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidImage, AttributeLocation(attribute, cancellationToken),
                        $"[LlmImage] on '{typeName}.{column.PropertyName}' needs a string (an image URL) or a byte[] (a bytea column), not '{type.ToDisplayString(SymbolDisplayFormat.MinimallyQualifiedFormat)}'"));
                }
            }
        }

        /// <summary>PostgreSQL keeps 63 bytes of a name and silently cuts the rest, so two long names could become one.</summary>
        private static void CheckIdentifier(string name, string what, Location? location, List<DiagnosticInfo> diagnostics)
        {
            var problem = IdentifierProblem(name);
            if (problem is not null)
            {
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidIdentifier, location, $"The {what} '{name}' {problem}"));
            }
        }

        private static bool CheckColumnName(ColumnInfo column, HashSet<string> checkedColumns, List<DiagnosticInfo> diagnostics, CancellationToken cancellationToken)
        {
            var problem = IdentifierProblem(column.ColumnName);
            if (problem is null)
            {
                return true;
            }

            if (checkedColumns.Add(column.ColumnName))
            {
                var location = column.Attributes.Where(a => Is(a, ColumnAttribute)).Select(a => AttributeLocation(a, cancellationToken)).FirstOrDefault()
                    ?? column.Declaration;
                diagnostics.Add(Diagnostic(DiagnosticDescriptors.InvalidIdentifier, location,
                    $"The column name '{column.ColumnName}' of '{column.PropertyName}' {problem}"));
            }

            return false;
        }

        internal static string? IdentifierProblem(string name)
        {
            if (name.Trim().Length == 0)
            {
                return "is empty";
            }

            if (!Sql.SqlWriter.IsStorable(name))
            {
                return "contains a NUL character, which PostgreSQL cannot store";
            }

            var bytes = Encoding.UTF8.GetByteCount(name);
            return bytes > MaxIdentifierBytes
                ? $"is {bytes} bytes long; PostgreSQL keeps only the first {MaxIdentifierBytes} and would silently cut it"
                : null;
        }

        /// <summary>A placeholder or target may name the property or the column; the property wins.</summary>
        private static ColumnInfo? Resolve(IReadOnlyList<ColumnInfo> columns, string name) =>
            columns.FirstOrDefault(c => c.PropertyName == name) ?? columns.FirstOrDefault(c => c.ColumnName == name);

        private static List<ColumnInfo> ReadColumns(INamedTypeSymbol type, CancellationToken cancellationToken)
        {
            var result = new List<ColumnInfo>();
            var seen = new HashSet<string>();
            var chain = new List<INamedTypeSymbol>();
            for (var t = type; t is not null && t.SpecialType != SpecialType.System_Object; t = t.BaseType)
            {
                chain.Add(t);
            }

            // Base members first, so columns come out in the order a reader of the type sees them.
            chain.Reverse();
            var parameters = type.InstanceConstructors
                .Where(c => c.DeclaringSyntaxReferences.Any(r => r.GetSyntax() is TypeDeclarationSyntax))
                .SelectMany(c => c.Parameters)
                .ToList();
            foreach (var t in chain)
            {
                foreach (var property in t.GetMembers().OfType<IPropertySymbol>())
                {
                    if (property.IsStatic || property.IsIndexer || property.DeclaredAccessibility != Accessibility.Public || !seen.Add(property.Name))
                    {
                        continue;
                    }

                    // Attributes on a record's positional parameter without a 'property:' target stay
                    // on the parameter; read both so either spelling works.
                    var attributes = property.GetAttributes()
                        .Concat(parameters.Where(p => p.Name == property.Name).SelectMany(p => p.GetAttributes()))
                        .ToImmutableArray();
                    var columnName = attributes.Where(a => Is(a, ColumnAttribute))
                        .Select(a => a.ConstructorArguments.Length > 0 ? a.ConstructorArguments[0].Value as string : null)
                        .FirstOrDefault(n => !string.IsNullOrEmpty(n)) ?? SnakeCase(property.Name);
                    result.Add(new ColumnInfo(
                        property.Name,
                        columnName,
                        attributes.Any(a => Is(a, KeyAttribute)),
                        attributes.Any(a => Is(a, LlmImageAttribute)),
                        property.Type,
                        CannotHoldNull(property.Type, property.NullableAnnotation),
                        JsonSchemas.DescriptionOf(property, attributes, cancellationToken),
                        property.Locations.FirstOrDefault(),
                        attributes));
                }
            }

            return result;
        }

        /// <summary>A value type other than <c>Nullable&lt;T&gt;</c>, or a reference type declared not nullable (<c>string</c> under <c>#nullable enable</c>).</summary>
        private static bool CannotHoldNull(ITypeSymbol type, NullableAnnotation annotation) =>
            type.IsValueType
                ? type is not INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T }
                : annotation == NullableAnnotation.NotAnnotated;

        /// <summary>ReviewText -> review_text, ImageURL -> image_url, Item2Name -> item2_name.</summary>
        internal static string SnakeCase(string name)
        {
            var builder = new StringBuilder(name.Length + 8);
            for (var i = 0; i < name.Length; i++)
            {
                var c = name[i];
                if (char.IsUpper(c))
                {
                    var previous = i > 0 ? name[i - 1] : '\0';
                    var next = i + 1 < name.Length ? name[i + 1] : '\0';
                    if (i > 0 && previous != '_' && (char.IsLower(previous) || char.IsDigit(previous) || (char.IsUpper(previous) && char.IsLower(next))))
                    {
                        builder.Append('_');
                    }

                    builder.Append(char.ToLowerInvariant(c));
                }
                else
                {
                    builder.Append(c);
                }
            }

            return builder.ToString();
        }

        private static bool Is(AttributeData attribute, string metadataName) =>
            attribute.AttributeClass?.ToDisplayString() == metadataName;

        private static string? NamedString(AttributeData attribute, string name) =>
            attribute.NamedArguments.Where(a => a.Key == name).Select(a => a.Value.Value as string).FirstOrDefault();

        private static double? NamedDouble(AttributeData attribute, string name) =>
            attribute.NamedArguments.Where(a => a.Key == name).Select(a => a.Value.Value as double?).FirstOrDefault();

        private static int? NamedInt(AttributeData attribute, string name) =>
            attribute.NamedArguments.Where(a => a.Key == name).Select(a => a.Value.Value as int?).FirstOrDefault();

        private static Location? AttributeLocation(AttributeData attribute, CancellationToken cancellationToken) =>
            attribute.ApplicationSyntaxReference?.GetSyntax(cancellationToken).GetLocation();

        private static Location? ArgumentLocation(AttributeData attribute, int index, CancellationToken cancellationToken)
        {
            if (attribute.ApplicationSyntaxReference?.GetSyntax(cancellationToken) is not AttributeSyntax syntax)
            {
                return null;
            }

            var positional = syntax.ArgumentList?.Arguments.Where(a => a.NameEquals is null && a.NameColon is null).ToList();
            return positional is not null && index < positional.Count ? positional[index].GetLocation() : syntax.GetLocation();
        }

        private static Location? NamedArgumentLocation(AttributeData attribute, string name, CancellationToken cancellationToken)
        {
            if (attribute.ApplicationSyntaxReference?.GetSyntax(cancellationToken) is not AttributeSyntax syntax)
            {
                return null;
            }

            return syntax.ArgumentList?.Arguments.FirstOrDefault(a => a.NameEquals?.Name.Identifier.ValueText == name)?.GetLocation()
                ?? syntax.GetLocation();
        }

        internal static DiagnosticInfo Diagnostic(DiagnosticDescriptor descriptor, Location? location, params string[] arguments) =>
            new(descriptor.Id, ToInfo(location), arguments.ToEquatableArray());

        internal static LocationInfo? ToInfo(Location? location)
        {
            if (location is null || !location.IsInSource)
            {
                return null;
            }

            var span = location.GetLineSpan().Span;
            return new LocationInfo(location.SourceTree!.FilePath, location.SourceSpan.Start, location.SourceSpan.Length,
                span.Start.Line, span.Start.Character, span.End.Line, span.End.Character);
        }

        private sealed record ColumnInfo(
            string PropertyName,
            string ColumnName,
            bool IsKey,
            bool IsImage,
            ITypeSymbol Type,
            bool CannotHoldNull,
            string? Description,
            Location? Declaration,
            ImmutableArray<AttributeData> Attributes);
    }
}
