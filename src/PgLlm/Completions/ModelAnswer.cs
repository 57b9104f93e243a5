namespace PgLlm.Completions;

/// <summary>
/// What one model call cost and who answered: the tokens the provider reported (null when it reported none), the
/// model that answered (the name the endpoint reported, else the one asked) and whether the answer cache answered.
/// </summary>
internal sealed record ModelUsage(int? InputTokens, int? OutputTokens, string? Model, bool CacheHit);

/// <summary>A validated answer: a JSON object holding exactly the task's target columns, with its call's usage.</summary>
internal sealed record ModelAnswer(string Json, int? InputTokens, int? OutputTokens, string? Model = null, bool CacheHit = false)
{
    /// <summary>The call's tokens, model and cache hit.</summary>
    public ModelUsage Usage => new(InputTokens, OutputTokens, Model, CacheHit);
}
