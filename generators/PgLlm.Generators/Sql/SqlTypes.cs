using System.Linq;
using Microsoft.CodeAnalysis;

namespace PgLlm.Generators.Sql;

/// <summary>
/// What the runtime's table check needs to know of a property's C# type: the PostgreSQL type a column of it
/// would have (for the <c>CREATE TABLE</c> a check suggests), and, for a target, the kind of answer the model
/// gives, named as the runtime names it (PgLlm.Migrations.TableCheck reads the same kinds from a task's JSON schema).
/// </summary>
internal static class SqlTypes
{
    /// <summary>The PostgreSQL type of a key or read column of this C# type.</summary>
    public static string For(ITypeSymbol type)
    {
        type = Unwrapped(type);
        if (type is IArrayTypeSymbol { ElementType.SpecialType: SpecialType.System_Byte })
        {
            return "bytea";
        }

        switch (type.SpecialType)
        {
            case SpecialType.System_String or SpecialType.System_Char:
                return "text";
            case SpecialType.System_Boolean:
                return "boolean";
            case SpecialType.System_Byte or SpecialType.System_SByte or SpecialType.System_Int16:
                return "smallint";
            case SpecialType.System_UInt16 or SpecialType.System_Int32:
                return "integer";
            case SpecialType.System_UInt32 or SpecialType.System_Int64:
                return "bigint";
            case SpecialType.System_UInt64 or SpecialType.System_Decimal:
                return "numeric";
            case SpecialType.System_Single:
                return "real";
            case SpecialType.System_Double:
                return "double precision";
        }

        return PgLlm.Migrations.AnswerKinds.SqlTypeOf(KindOf(type));
    }

    /// <summary>The kind of answer a target of this C# type receives: its JSON type, refined by format (<c>date-time</c>, <c>date</c>, <c>time</c>, <c>uuid</c>) or <c>enum</c>.</summary>
    public static string KindOf(ITypeSymbol type)
    {
        type = Unwrapped(type);
        switch (type.SpecialType)
        {
            case SpecialType.System_String or SpecialType.System_Char:
                return "string";
            case SpecialType.System_Boolean:
                return "boolean";
            case SpecialType.System_Byte or SpecialType.System_SByte or SpecialType.System_Int16 or SpecialType.System_UInt16
                or SpecialType.System_Int32 or SpecialType.System_UInt32 or SpecialType.System_Int64 or SpecialType.System_UInt64:
                return "integer";
            case SpecialType.System_Single or SpecialType.System_Double or SpecialType.System_Decimal:
                return "number";
            case SpecialType.System_DateTime:
                return "date-time";
        }

        if (type.TypeKind == TypeKind.Enum)
        {
            return "enum";
        }

        switch (type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat))
        {
            case "global::System.DateTimeOffset":
                return "date-time";
            case "global::System.DateOnly":
                return "date";
            case "global::System.TimeOnly":
                return "time";
            case "global::System.Guid":
                return "uuid";
        }

        if (type is IArrayTypeSymbol { Rank: 1 } array)
        {
            return "array of " + ElementKind(array.ElementType);
        }

        if (type is INamedTypeSymbol { IsGenericType: true, TypeArguments.Length: 1 } generic
            && generic.AllInterfaces.Any(i => i.OriginalDefinition.SpecialType == SpecialType.System_Collections_Generic_IEnumerable_T)
            || type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Collections_Generic_IEnumerable_T })
        {
            return "array of " + ElementKind(((INamedTypeSymbol)type).TypeArguments[0]);
        }

        return "object";
    }

    private static string ElementKind(ITypeSymbol element)
    {
        var kind = KindOf(element);
        return kind.StartsWith("array of ", System.StringComparison.Ordinal) ? "array" : kind;
    }

    private static ITypeSymbol Unwrapped(ITypeSymbol type) =>
        type is INamedTypeSymbol { OriginalDefinition.SpecialType: SpecialType.System_Nullable_T } wrapped ? wrapped.TypeArguments[0] : type;
}
