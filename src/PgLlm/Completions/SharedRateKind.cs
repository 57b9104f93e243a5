namespace PgLlm.Completions;

/// <summary>The two budgets of an endpoint.</summary>
internal enum SharedRateKind
{
    /// <summary>Requests per minute.</summary>
    Requests = 0,

    /// <summary>Tokens (input and output) per minute.</summary>
    Tokens = 1,
}
