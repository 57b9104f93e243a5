using System.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Text;
using PgLlm.Generators.Model;

namespace PgLlm.Generators;

/// <summary>
/// Turns [LlmTable] types into PostgreSQL migration scripts (the core queue schema and, per table,
/// static trigger functions and triggers), exposed as <c>PgLlm.Generated.PgLlmScripts</c>.
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed partial class LlmGenerator : IIncrementalGenerator
{
    /// <summary>Names of the pipeline stages, for caching tests.</summary>
    internal static class TrackingNames
    {
        public const string Parse = nameof(Parse);
        public const string Diagnostics = nameof(Diagnostics);
        public const string Tables = nameof(Tables);
        public const string TableClaims = nameof(TableClaims);
    }

    /// <inheritdoc />
    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        // 1. Each [LlmTable] type, parsed into a value-equal spec and its diagnostics.
        var parsed = context.SyntaxProvider
            .ForAttributeWithMetadataName(
                LlmTableAttribute,
                static (node, _) => node is TypeDeclarationSyntax,
                static (ctx, ct) => Parser.Parse(ctx, ct))
            .WithTrackingName(TrackingNames.Parse);

        // 2. Diagnostics on a pipeline of their own, so they never invalidate the emitted scripts.
        var diagnostics = parsed
            .SelectMany(static (result, _) => result.Diagnostics)
            .WithTrackingName(TrackingNames.Diagnostics);
        context.RegisterSourceOutput(diagnostics, static (spc, info) => spc.ReportDiagnostic(ToDiagnostic(info)));

        // 3. Two types mapping to one table: an error on each, and neither is emitted (step 4).
        var duplicateTables = parsed
            .Select(static (result, _) => result.Claim)
            .Where(static claim => claim is not null)
            .Collect()
            .SelectMany(static (all, _) => DuplicateTableDiagnostics(all!))
            .WithTrackingName(TrackingNames.TableClaims);
        context.RegisterSourceOutput(duplicateTables, static (spc, info) => spc.ReportDiagnostic(ToDiagnostic(info)));

        // 4. The valid tables, each claimed by one type, in a stable order whatever the file order.
        var tables = parsed
            .Select(static (result, _) => result.Table)
            .Where(static table => table is not null)
            .Collect()
            .Select(static (all, _) => all
                .Select(static t => t!)
                .GroupBy(static t => (t.Schema, t.Table))
                .Where(static g => g.Count() == 1)
                .Select(static g => g.First())
                .OrderBy(static t => t.Schema, System.StringComparer.Ordinal)
                .ThenBy(static t => t.Table, System.StringComparer.Ordinal)
                .ThenBy(static t => t.TypeDisplayName, System.StringComparer.Ordinal)
                .ToEquatableArray())
            .WithTrackingName(TrackingNames.Tables);

        // 5. One C# file holding every script.
        context.RegisterSourceOutput(tables, static (spc, all) => spc.AddSource("PgLlmScripts.g.cs", Emitter.Emit(all)));
    }

    private static EquatableArray<DiagnosticInfo> DuplicateTableDiagnostics(System.Collections.Immutable.ImmutableArray<TableClaim?> claims) =>
        claims
            .Select(static c => c!)
            .GroupBy(static c => (c.Schema, c.Table))
            .Where(static g => g.Count() > 1)
            .SelectMany(static g => g.Select(c => new DiagnosticInfo(
                DiagnosticDescriptors.DuplicateTable.Id,
                c.Location,
                new[] { c.TypeName, g.First(o => o != c).TypeName, Sql.SqlWriter.Qualified(c.Schema, c.Table) }.ToEquatableArray())))
            .ToEquatableArray();

    private static Diagnostic ToDiagnostic(DiagnosticInfo info)
    {
        var location = info.Location is { } l
            ? Location.Create(l.FilePath, new TextSpan(l.Start, l.Length), new LinePositionSpan(new LinePosition(l.StartLine, l.StartCharacter), new LinePosition(l.EndLine, l.EndCharacter)))
            : Location.None;
        return Diagnostic.Create(DiagnosticDescriptors.Get(info.Id), location, info.Arguments.Cast<object>().ToArray());
    }
}
