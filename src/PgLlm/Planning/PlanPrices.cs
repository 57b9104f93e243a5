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
        await using (var command = dataSource.CreateCommand("SELECT model, input_per_million, output_per_million FROM llm.model_price"))
        {
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                known[reader.GetString(0)] = new PgLlmPrice { InputPerMillion = reader.GetDecimal(1), OutputPerMillion = reader.GetDecimal(2) };
            }
        }

        foreach (var (name, price) in options?.Prices ?? [])
        {
            known[name] = price;
        }

        return (model is not null ? known.GetValueOrDefault(model) : null) ?? known.GetValueOrDefault("*");
    }
}
