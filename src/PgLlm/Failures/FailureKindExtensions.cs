namespace PgLlm.Failures;

/// <summary>The failure kind as <c>llm.fail</c> takes it.</summary>
internal static class FailureKindExtensions
{
    public static string ToSql(this FailureKind kind) => kind switch
    {
        FailureKind.Invalid => "invalid",
        FailureKind.Permanent => "permanent",
        _ => "transient",
    };
}
