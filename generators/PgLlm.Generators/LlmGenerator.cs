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

        // 3. The valid tables, in a stable order whatever the file order.
        var tables = parsed
            .Select(static (result, _) => result.Table)
            .Where(static table => table is not null)
            .Collect()
            .Select(static (all, _) => all
                .Select(static t => t!)
                .OrderBy(static t => t.Schema, System.StringComparer.Ordinal)
                .ThenBy(static t => t.Table, System.StringComparer.Ordinal)
                .ThenBy(static t => t.TypeDisplayName, System.StringComparer.Ordinal)
                .ToEquatableArray())
            .WithTrackingName(TrackingNames.Tables);

        // 4. One C# file holding every script.
        context.RegisterSourceOutput(tables, static (spc, all) => spc.AddSource("PgLlmScripts.g.cs", Emitter.Emit(all)));
    }

    private static Diagnostic ToDiagnostic(DiagnosticInfo info)
    {
        var location = info.Location is { } l
            ? Location.Create(l.FilePath, new TextSpan(l.Start, l.Length), new LinePositionSpan(new LinePosition(l.StartLine, l.StartCharacter), new LinePosition(l.EndLine, l.EndCharacter)))
            : Location.None;
        return Diagnostic.Create(DiagnosticDescriptors.Get(info.Id), location, info.Arguments.Cast<object>().ToArray());
    }
}
