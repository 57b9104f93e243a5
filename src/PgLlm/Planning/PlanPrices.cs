using Npgsql;

namespace PgLlm.Planning;

/// <summary>
/// The price of a task's tokens for an estimate: the configured prices (<c>PgLlm:Prices</c>) over the rows of
/// <c>llm.model_price</c>; the task's model's price, else the <c>*</c> price (as <c>llm.task_price</c> and
/// <c>pgllm status</c> price them).
/// </summary>
internal static class PlanPrices
{
    public static async Task<PgLlmPrice?> ForModelAsync(NpgsqlDataSource dataSource, PgLlmOptions? options, string? model, CancellationToken cancellationToken)
    {
        var known = new Dictionary<string, PgLlmPrice>(StringComparer.Ordinal);
        // The batch prices are read so that a queue from before the batch tier's step has none.
        await using (var command = dataSource.CreateCommand(
            "SELECT model, input_per_million, output_per_million, (to_jsonb(mp) ->> 'batch_input_per_million')::numeric, " +
            "(to_jsonb(mp) ->> 'batch_output_per_million')::numeric FROM llm.model_price AS mp"))
        {
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                known[reader.GetString(0)] = new PgLlmPrice
                {
                    InputPerMillion = reader.GetDecimal(1),
                    OutputPerMillion = reader.GetDecimal(2),
                    BatchInputPerMillion = reader.IsDBNull(3) ? null : reader.GetDecimal(3),
                    BatchOutputPerMillion = reader.IsDBNull(4) ? null : reader.GetDecimal(4),
                };
            }
        }

        foreach (var (name, price) in options?.Prices ?? [])
        {
            known[name] = price;
        }

        return (model is not null ? known.GetValueOrDefault(model) : null) ?? known.GetValueOrDefault("*");
    }

    /// <summary>The cost of these tokens at <paramref name="price"/>, or at its batch prices (unset: half the price).</summary>
    public static decimal CostOf(PgLlmPrice price, long inputTokens, long outputTokens, bool batch) =>
        Math.Round(
            ((inputTokens * (batch ? price.BatchInputPerMillion ?? (price.InputPerMillion / 2) : price.InputPerMillion))
             + (outputTokens * (batch ? price.BatchOutputPerMillion ?? (price.OutputPerMillion / 2) : price.OutputPerMillion))) / 1_000_000m,
            6);
}
