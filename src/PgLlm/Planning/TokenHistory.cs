using Npgsql;

namespace PgLlm.Planning;

/// <summary>One definition's answered jobs: how many, and their average tokens and call time.</summary>
/// <param name="Jobs">First-attempt, succeeded jobs not answered by the cache, with tokens reported.</param>
/// <param name="AverageInput">Their average input tokens.</param>
/// <param name="AverageOutput">Their average output tokens.</param>
/// <param name="AverageCallSeconds">Their average time from claim to settle, in seconds (null when unknown).</param>
internal sealed record DefinitionHistory(long Jobs, double AverageInput, double AverageOutput, double? AverageCallSeconds);

/// <summary>A task's token history per definition (<c>llm.task_token_history</c>), from the jobs still kept.</summary>
internal sealed class TokenHistory
{
    private readonly Dictionary<string, DefinitionHistory> _byDefinition;

    private TokenHistory(Dictionary<string, DefinitionHistory> byDefinition) => _byDefinition = byDefinition;

    /// <summary>The average output tokens over every definition, weighted by jobs; null without history.</summary>
    public double? AnyOutput => Weighted(h => h.AverageOutput);

    /// <summary>The average call time over every definition, weighted by jobs; null without history.</summary>
    public double? AnyCallSeconds => Weighted(h => h.AverageCallSeconds);

    /// <summary>The jobs of every definition.</summary>
    public long Jobs => _byDefinition.Values.Sum(h => h.Jobs);

    /// <summary>The history of one definition; null when it answered no job.</summary>
    public DefinitionHistory? Of(string definitionHash) => _byDefinition.GetValueOrDefault(definitionHash);

    public static async Task<TokenHistory> ReadAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT definition_hash, jobs, avg_input_tokens, avg_output_tokens, avg_call_seconds FROM llm.task_token_history($1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        var history = new Dictionary<string, DefinitionHistory>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            history[reader.GetString(0)] = new DefinitionHistory(
                reader.GetInt64(1), reader.GetDouble(2), reader.GetDouble(3), reader.IsDBNull(4) ? null : reader.GetDouble(4));
        }

        return new TokenHistory(history);
    }

    private double? Weighted(Func<DefinitionHistory, double?> value)
    {
        var known = _byDefinition.Values.Where(h => value(h) is not null).ToList();
        var jobs = known.Sum(h => h.Jobs);
        return jobs == 0 ? null : known.Sum(h => value(h)!.Value * h.Jobs) / jobs;
    }
}
