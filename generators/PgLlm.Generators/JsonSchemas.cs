using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using static PgLlm.Generators.Sql.SqlWriter;

namespace PgLlm.Generators;

/// <summary>
/// The JSON schema of a target property, decided by its C# type. The schemas are written for strict
/// structured outputs: every object lists all its properties as required and allows no others, and a
/// value that may be null is a type array with "null" (an enum also lists null among its values).
/// A target itself may be null only when its task says so (AllowNull), whatever its C# type: a column is
/// nullable because it is empty until filled, not because the model may decline. Inside a target (a
/// record's properties, an array's items) the C# nullability decides, as there is no declaration to ask.
/// </summary>
internal static class JsonSchemas
{
    private const int MaxDepth = 8;

    private static readonly Regex SummaryPattern = new("<summary>(.*?)</summary>", RegexOptions.Singleline | RegexOptions.CultureInvariant);
    private static readonly Regex CrefPattern = new("<(?:see|seealso)\\s+(?:cref|langword|href)=\"(?:[A-Z]:)?([^\"]*)\"\\s*/>", RegexOptions.CultureInvariant);
    private static readonly Regex TagPattern = new("<[^>]+>", RegexOptions.CultureInvariant);
    private static readonly Regex SpacePattern = new("\\s+", RegexOptions.CultureInvariant);

    /// <summary>The schema of a target property, or null with a reason when its type has no mapping.</summary>
    /// <param name="allowNull">Whether the task allows null for this target (AllowNull); the type's nullability does not count.</param>
    public static string? ForTarget(ITypeSymbol type, bool allowNull, string? description, ImmutableArray<AttributeData> attributes, out string? problem)
    {
        if (type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T } wrapped)
        {
            type = wrapped.TypeArguments[0];
        }

        return For(type, allowNull, description, RangeOf(attributes), new List<ITypeSymbol>(), 0, out problem);
    }

    /// <summary>[Range(1, 5)] on a number: the schema's minimum and maximum, checked again before the write.</summary>
    private static string? RangeOf(ImmutableArray<AttributeData> attributes)
    {
        var range = attributes.FirstOrDefault(a => a.AttributeClass?.ToDisplayString() == "System.ComponentModel.DataAnnotations.RangeAttribute");
        if (range is null || range.ConstructorArguments.Length != 2)
        {
            return null;
        }

        var bounds = range.ConstructorArguments.Select(a => a.Value switch
        {
            int i => i.ToString(System.Globalization.CultureInfo.InvariantCulture),
            double d when !double.IsNaN(d) && !double.IsInfinity(d) => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            _ => null,
        }).ToList();
        return bounds.Any(b => b is null) ? null : ",\"minimum\":" + bounds[0] + ",\"maximum\":" + bounds[1];
    }

    /// <summary>A <c>Nullable&lt;T&gt;</c> or an annotated reference type (<c>string?</c>) may be null.</summary>
    public static bool IsNullable(ITypeSymbol type, NullableAnnotation annotation) =>
        annotation == NullableAnnotation.Annotated
        || type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T };

    /// <summary>[Description] wins; otherwise the summary of the property's XML doc comment.</summary>
    public static string? DescriptionOf(IPropertySymbol property, ImmutableArray<AttributeData> attributes, CancellationToken cancellationToken)
    {
        var described = attributes
            .Where(a => a.AttributeClass?.ToDisplayString() == "System.ComponentModel.DescriptionAttribute")
            .Select(a => a.ConstructorArguments.Length > 0 ? a.ConstructorArguments[0].Value as string : null)
            .FirstOrDefault(d => !string.IsNullOrWhiteSpace(d));
        if (described is not null)
        {
            return described;
        }

        var match = SummaryPattern.Match(DocumentationOf(property, cancellationToken));
        if (!match.Success)
        {
            // A positional record's property is documented on the record: <param name="Total">.
            var parameter = PrimaryConstructorParameter(property);
            if (parameter is null)
            {
                return null;
            }

            var pattern = new Regex("<param name=\"" + Regex.Escape(parameter.Name) + "\">(.*?)</param>", RegexOptions.Singleline | RegexOptions.CultureInvariant);
            match = pattern.Match(DocumentationOf(property.ContainingType, cancellationToken));
            if (!match.Success)
            {
                return null;
            }
        }

        var text = CrefPattern.Replace(match.Groups[1].Value, m => m.Groups[1].Value.Split('.').Last());
        text = TagPattern.Replace(text, string.Empty).Replace("&lt;", "<").Replace("&gt;", ">").Replace("&amp;", "&");
        text = SpacePattern.Replace(text, " ").Trim();
        return text.Length == 0 ? null : text;
    }

    /// <summary>The property's attributes, and those of the record parameter it comes from (written without <c>property:</c>).</summary>
    public static ImmutableArray<AttributeData> AttributesOf(IPropertySymbol property)
    {
        var parameter = PrimaryConstructorParameter(property);
        return parameter is null ? property.GetAttributes() : property.GetAttributes().AddRange(parameter.GetAttributes());
    }

    private static IParameterSymbol? PrimaryConstructorParameter(IPropertySymbol property) =>
        property.ContainingType.InstanceConstructors
            .Where(c => c.DeclaringSyntaxReferences.Any(r => r.GetSyntax() is TypeDeclarationSyntax))
            .SelectMany(c => c.Parameters)
            .FirstOrDefault(p => p.Name == property.Name);

    /// <summary>The XML doc comment of a symbol; without GenerateDocumentationFile the compiler binds none, so read the trivia.</summary>
    private static string DocumentationOf(ISymbol symbol, CancellationToken cancellationToken)
    {
        var xml = symbol.GetDocumentationCommentXml(cancellationToken: cancellationToken);
        if (!string.IsNullOrEmpty(xml))
        {
            return xml!;
        }

        return string.Join("\n", symbol.DeclaringSyntaxReferences
            .Select(r => r.GetSyntax(cancellationToken))
            .OfType<MemberDeclarationSyntax>()
            .SelectMany(s => s.GetLeadingTrivia())
            .Select(t => t.ToFullString())
            .SelectMany(t => t.Split('\n'))
            .Select(l => l.Trim())
            .Where(l => l.StartsWith("///", System.StringComparison.Ordinal))
            .Select(l => l.Substring(3)));
    }

    /// <summary>An enum member's value in the schema and the column: the snake_case of its name.</summary>
    public static string EnumValue(string memberName) => LlmGenerator.Parser.SnakeCase(memberName);

    private static string? For(ITypeSymbol type, bool nullable, string? description, string? range, List<ITypeSymbol> visiting, int depth, out string? problem)
    {
        problem = null;
        if (type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T } wrapped)
        {
            type = wrapped.TypeArguments[0];
            nullable = true;
        }

        string? format = null;
        string jsonType;
        var extra = new StringBuilder();
        switch (type.SpecialType)
        {
            case SpecialType.System_String:
                jsonType = "string";
                break;
            case SpecialType.System_Boolean:
                jsonType = "boolean";
                break;
            case SpecialType.System_Byte or SpecialType.System_SByte or SpecialType.System_Int16 or SpecialType.System_UInt16
                or SpecialType.System_Int32 or SpecialType.System_UInt32 or SpecialType.System_Int64 or SpecialType.System_UInt64:
                jsonType = "integer";
                break;
            case SpecialType.System_Single or SpecialType.System_Double or SpecialType.System_Decimal:
                jsonType = "number";
                break;
            case SpecialType.System_DateTime:
                jsonType = "string";
                format = "date-time";
                break;
            case SpecialType.System_Char:
                problem = "a char has no JSON type; use string";
                return null;
            case SpecialType.System_Object:
                problem = "'object' says nothing about the answer's shape; use string, a number, bool, an enum, a date, an array or a record";
                return null;
            default:
                var name = type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat);
                switch (name)
                {
                    case "global::System.DateOnly":
                        jsonType = "string";
                        format = "date";
                        break;
                    case "global::System.DateTimeOffset":
                        jsonType = "string";
                        format = "date-time";
                        break;
                    case "global::System.TimeOnly":
                        jsonType = "string";
                        format = "time";
                        break;
                    case "global::System.Guid":
                        jsonType = "string";
                        format = "uuid";
                        break;
                    default:
                        return Composite(type, nullable, description, visiting, depth, out problem);
                }

                break;
        }

        if (range is not null && jsonType is "integer" or "number")
        {
            extra.Append(range);
        }

        return Write(jsonType, nullable, format, null, description, extra.ToString());
    }

    private static string? Composite(ITypeSymbol type, bool nullable, string? description, List<ITypeSymbol> visiting, int depth, out string? problem)
    {
        problem = null;
        if (type.TypeKind == TypeKind.Enum)
        {
            var members = type.GetMembers().OfType<IFieldSymbol>().Where(f => f.IsConst).Select(f => EnumValue(f.Name)).ToList();
            if (members.Count == 0)
            {
                problem = "the enum has no members";
                return null;
            }

            return Write("string", nullable, null, members, description, string.Empty);
        }

        var element = ElementType(type);
        if (element is not null)
        {
            if (element.SpecialType == SpecialType.System_Byte)
            {
                problem = "binary data cannot come from a model's JSON answer";
                return null;
            }

            if (ElementType(element) is not null && element.SpecialType != SpecialType.System_String)
            {
                problem = "an array of arrays has no reliable PostgreSQL array mapping; use an array of records";
                return null;
            }

            var items = For(element, IsNullable(element, element.NullableAnnotation), null, null, visiting, depth + 1, out problem);
            return items is null ? null : Write("array", nullable, null, null, description, ",\"items\":" + items);
        }

        if (type is not INamedTypeSymbol named || type.TypeKind is not (TypeKind.Class or TypeKind.Struct) || named.IsAbstract
            || named.IsGenericType || IsSystemType(type))
        {
            problem = $"'{type.ToDisplayString(SymbolDisplayFormat.MinimallyQualifiedFormat)}' has no JSON schema mapping; use string, a number, bool, an enum, a date, an array or a record";
            return null;
        }

        if (depth >= MaxDepth || visiting.Contains(type, SymbolEqualityComparer.Default))
        {
            problem = $"'{type.Name}' refers to itself, and a strict schema cannot describe an unbounded shape";
            return null;
        }

        var properties = new List<IPropertySymbol>();
        var seen = new HashSet<string>();
        for (var t = (INamedTypeSymbol?)named; t is not null && t.SpecialType != SpecialType.System_Object && t.SpecialType != SpecialType.System_ValueType; t = t.BaseType)
        {
            properties.InsertRange(0, t.GetMembers().OfType<IPropertySymbol>()
                .Where(p => !p.IsStatic && !p.IsIndexer && p.DeclaredAccessibility == Accessibility.Public && p.GetMethod is not null
                    && p.Name != "EqualityContract" && seen.Add(p.Name)));
        }

        if (properties.Count == 0)
        {
            problem = $"'{type.Name}' has no public properties to describe";
            return null;
        }

        visiting.Add(type);
        var body = new StringBuilder(",\"properties\":{");
        var names = new List<string>();
        foreach (var property in properties)
        {
            var attributes = AttributesOf(property);
            var jsonName = attributes
                .Where(a => a.AttributeClass?.ToDisplayString() == "System.Text.Json.Serialization.JsonPropertyNameAttribute")
                .Select(a => a.ConstructorArguments.Length > 0 ? a.ConstructorArguments[0].Value as string : null)
                .FirstOrDefault(n => !string.IsNullOrEmpty(n)) ?? property.Name;
            var schema = For(property.Type, IsNullable(property.Type, property.NullableAnnotation),
                DescriptionOf(property, attributes, CancellationToken.None), RangeOf(attributes), visiting, depth + 1, out var inner);
            if (schema is null)
            {
                problem = $"its property '{property.Name}': {inner}";
                visiting.RemoveAt(visiting.Count - 1);
                return null;
            }

            body.Append(names.Count == 0 ? string.Empty : ",").Append(JsonString(jsonName)).Append(':').Append(schema);
            names.Add(jsonName);
        }

        visiting.RemoveAt(visiting.Count - 1);
        body.Append("},\"required\":[").Append(string.Join(",", names.Select(JsonString))).Append("],\"additionalProperties\":false");
        return Write("object", nullable, null, null, description, body.ToString());
    }

    /// <summary>T of T[], List&lt;T&gt;, IReadOnlyList&lt;T&gt;, IEnumerable&lt;T&gt;, ImmutableArray&lt;T&gt; and the like; null otherwise.</summary>
    private static ITypeSymbol? ElementType(ITypeSymbol type)
    {
        if (type is IArrayTypeSymbol { Rank: 1 } array)
        {
            return array.ElementType;
        }

        if (type is INamedTypeSymbol { IsGenericType: true, TypeArguments.Length: 1 } generic)
        {
            switch (generic.OriginalDefinition.ToDisplayString())
            {
                case "System.Collections.Generic.List<T>":
                case "System.Collections.Generic.IList<T>":
                case "System.Collections.Generic.IReadOnlyList<T>":
                case "System.Collections.Generic.ICollection<T>":
                case "System.Collections.Generic.IReadOnlyCollection<T>":
                case "System.Collections.Generic.IEnumerable<T>":
                case "System.Collections.Immutable.ImmutableArray<T>":
                case "System.Collections.Immutable.ImmutableList<T>":
                    return generic.TypeArguments[0];
            }
        }

        return null;
    }

    private static bool IsSystemType(ITypeSymbol type)
    {
        var ns = type.ContainingNamespace?.ToDisplayString() ?? string.Empty;
        return ns == "System" || ns.StartsWith("System.", System.StringComparison.Ordinal) || ns.StartsWith("Microsoft.", System.StringComparison.Ordinal);
    }

    private static string Write(string jsonType, bool nullable, string? format, List<string>? values, string? description, string rest)
    {
        var schema = new StringBuilder("{\"type\":");
        schema.Append(nullable ? "[" + JsonString(jsonType) + ",\"null\"]" : JsonString(jsonType));
        if (format is not null)
        {
            schema.Append(",\"format\":").Append(JsonString(format));
        }

        if (values is not null)
        {
            schema.Append(",\"enum\":[").Append(string.Join(",", values.Select(JsonString))).Append(nullable ? ",null]" : "]");
        }

        schema.Append(rest);
        if (description is not null)
        {
            schema.Append(",\"description\":").Append(JsonString(description));
        }

        return schema.Append('}').ToString();
    }
}
