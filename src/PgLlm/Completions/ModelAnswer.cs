namespace PgLlm.Completions;

/// <summary>A validated answer: a JSON object holding exactly the task's target columns.</summary>
internal sealed record ModelAnswer(string Json, int? InputTokens, int? OutputTokens);
