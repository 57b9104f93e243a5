using Npgsql;
using NpgsqlTypes;

namespace PgLlm.Observability;

/// <summary>One task's line in the queue status.</summary>
/// <param name="Task">The task's name.</param>
/// <param name="Model">The model the task names; null for the worker's default.</param>
/// <param name="Pending">Jobs waiting, including scheduled retries.</param>
/// <param name="Running">Jobs claimed by a worker.</param>
/// <param name="Succeeded">Jobs whose answer was written (kept for the retention period).</param>
/// <param name="Failed">Dead letters.</param>
/// <param name="Superseded">Jobs whose row changed while the model answered.</param>
/// <param name="Skipped">Jobs whose row was gone.</param>
/// <param name="OldestPending">Age of the oldest pending job; null when none is pending.</param>
/// <param name="InputTokens">Input tokens of the kept jobs: every attempt the provider reported usage for, failed ones too.</param>
/// <param name="OutputTokens">Output tokens of the kept jobs: every attempt the provider reported usage for, failed ones too.</param>
/// <param name="EstimatedCost">The cost of those tokens, when a price is known for the task's model.</param>
/// <param name="TopFailures">The most frequent last errors of failed jobs, with their counts.</param>
/// <param name="EditedCells">Cells of the task's targets changed by someone other than PgLlm, which its answers do not overwrite (<c>llm.edited_cells</c>).</param>
public sealed record PgLlmTaskStatus(
    string Task,
    string? Model,
    long Pending,
    long Running,
    long Succeeded,
    long Failed,
    long Superseded,
    long Skipped,
    TimeSpan? OldestPending,
    long InputTokens,
    long OutputTokens,
    decimal? EstimatedCost,
    IReadOnlyList<(string Error, long Count)> TopFailures,
    long EditedCells = 0);

/// <summary>Reads the queue's state per task, and keeps configured prices in <c>llm.model_price</c>.</summary>
public static class PgLlmStatus
{
    /// <summary>Counts the queue by state (one index-backed scan per state).</summary>
    public static async Task<QueueDepth> ReadDepthAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand(
            "SELECT (SELECT count(*) FROM llm.job WHERE state = 'pending'), " +
            "(SELECT count(*) FROM llm.job WHERE state = 'running'), " +
            "(SELECT count(*) FROM llm.job WHERE state = 'failed')");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new QueueDepth(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), DateTimeOffset.UtcNow);
    }

    /// <summary>
    /// Every registered task (and any task name still in the queue), with its jobs by state, the age of
    /// its oldest pending job, its three most frequent failures, its tokens and their estimated cost, and
    /// how many of its target cells someone other than PgLlm edited.
    /// Prices come from <paramref name="prices"/> first, then <c>llm.model_price</c>.
    /// </summary>
    public static async Task<IReadOnlyList<PgLlmTaskStatus>> ReadAsync(
        NpgsqlDataSource dataSource, IReadOnlyDictionary<string, PgLlmPrice>? prices = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var known = await ReadPricesAsync(dataSource, cancellationToken).ConfigureAwait(false);
        if (prices is not null)
        {
            foreach (var (model, price) in prices)
            {
                known[model] = price;
            }
        }

        const string sql = """
            WITH names AS (SELECT name AS task FROM llm.task UNION SELECT DISTINCT task FROM llm.job),
            counts AS (
                SELECT j.task,
                       count(*) FILTER (WHERE j.state = 'pending') AS pending,
                       count(*) FILTER (WHERE j.state = 'running') AS running,
                       count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
                       count(*) FILTER (WHERE j.state = 'failed') AS failed,
                       count(*) FILTER (WHERE j.state = 'superseded') AS superseded,
                       count(*) FILTER (WHERE j.state = 'skipped') AS skipped,
                       extract(epoch FROM now() - min(j.created_at) FILTER (WHERE j.state = 'pending'))::float8 AS oldest,
                       coalesce(sum(j.input_tokens), 0)::bigint AS input_tokens,
                       coalesce(sum(j.output_tokens), 0)::bigint AS output_tokens
                  FROM llm.job AS j
                 GROUP BY j.task),
            failures AS (
                SELECT f.task, jsonb_agg(jsonb_build_array(f.error, f.n) ORDER BY f.n DESC, f.error) AS top
                  FROM (SELECT j.task, coalesce(j.last_error, '(no error recorded)') AS error, count(*) AS n,
                               row_number() OVER (PARTITION BY j.task ORDER BY count(*) DESC, coalesce(j.last_error, '')) AS rank
                          FROM llm.job AS j
                         WHERE j.state = 'failed'
                         GROUP BY j.task, j.last_error) AS f
                 WHERE f.rank <= 3
                 GROUP BY f.task)
            SELECT n.task, t.model,
                   coalesce(c.pending, 0), coalesce(c.running, 0), coalesce(c.succeeded, 0), coalesce(c.failed, 0),
                   coalesce(c.superseded, 0), coalesce(c.skipped, 0), c.oldest,
                   coalesce(c.input_tokens, 0), coalesce(c.output_tokens, 0), coalesce(f.top, '[]'::jsonb)::text,
                   CASE WHEN t.name IS NULL THEN 0 ELSE llm.edited_cells(t.name) END
              FROM names AS n
              LEFT JOIN llm.task AS t ON t.name = n.task
              LEFT JOIN counts AS c ON c.task = n.task
              LEFT JOIN failures AS f ON f.task = n.task
             ORDER BY n.task
            """;
        await using var command = dataSource.CreateCommand(sql);
        var result = new List<PgLlmTaskStatus>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            var model = reader.IsDBNull(1) ? null : reader.GetString(1);
            var input = reader.GetInt64(9);
            var output = reader.GetInt64(10);
            var price = (model is not null ? known.GetValueOrDefault(model) : null) ?? known.GetValueOrDefault("*");
            var failures = new List<(string, long)>();
            using (var document = System.Text.Json.JsonDocument.Parse(reader.GetString(11)))
            {
                foreach (var pair in document.RootElement.EnumerateArray())
                {
                    failures.Add((pair[0].GetString() ?? string.Empty, pair[1].GetInt64()));
                }
            }

            result.Add(new PgLlmTaskStatus(
                reader.GetString(0),
                model,
                reader.GetInt64(2),
                reader.GetInt64(3),
                reader.GetInt64(4),
                reader.GetInt64(5),
                reader.GetInt64(6),
                reader.GetInt64(7),
                reader.IsDBNull(8) ? null : TimeSpan.FromSeconds(Math.Max(0, reader.GetDouble(8))),
                input,
                output,
                price is null ? null : Math.Round(((input * price.InputPerMillion) + (output * price.OutputPerMillion)) / 1_000_000m, 6),
                failures,
                reader.GetInt64(12)));
        }

        return result;
    }

    /// <summary>Writes <paramref name="prices"/> into <c>llm.model_price</c> (replacing the same models' rows), so that the view <c>llm.usage_daily</c> estimates cost.</summary>
    public static async Task WritePricesAsync(NpgsqlDataSource dataSource, IReadOnlyDictionary<string, PgLlmPrice> prices, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(prices);
        if (prices.Count == 0)
        {
            return;
        }

        await using var command = dataSource.CreateCommand(
            "INSERT INTO llm.model_price (model, input_per_million, output_per_million) " +
            "SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[]) " +
            "ON CONFLICT (model) DO UPDATE SET input_per_million = EXCLUDED.input_per_million, " +
            "output_per_million = EXCLUDED.output_per_million, updated_at = now()");
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = prices.Keys.ToArray() });
        command.Parameters.Add(new NpgsqlParameter<decimal[]> { TypedValue = prices.Values.Select(p => p.InputPerMillion).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Numeric });
        command.Parameters.Add(new NpgsqlParameter<decimal[]> { TypedValue = prices.Values.Select(p => p.OutputPerMillion).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Numeric });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        if (prices.Values.Any(p => p.BatchInputPerMillion is not null || p.BatchOutputPerMillion is not null))
        {
            await WriteBatchPricesAsync(dataSource, prices, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The batch tier's prices of the same models (NULL where unset: half the price), from the batch tier's queue step on.</summary>
    private static async Task WriteBatchPricesAsync(NpgsqlDataSource dataSource, IReadOnlyDictionary<string, PgLlmPrice> prices, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "UPDATE llm.model_price AS mp SET batch_input_per_million = p.bi, batch_output_per_million = p.bo " +
            "FROM unnest($1::text[], $2::numeric[], $3::numeric[]) AS p(model, bi, bo) WHERE mp.model = p.model");
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = prices.Keys.ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = prices.Values.Select(p => (object?)p.BatchInputPerMillion ?? DBNull.Value).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Numeric });
        command.Parameters.Add(new NpgsqlParameter { Value = prices.Values.Select(p => (object?)p.BatchOutputPerMillion ?? DBNull.Value).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Numeric });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<Dictionary<string, PgLlmPrice>> ReadPricesAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var prices = new Dictionary<string, PgLlmPrice>(StringComparer.Ordinal);
        await using var command = dataSource.CreateCommand("SELECT model, input_per_million, output_per_million FROM llm.model_price");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            prices[reader.GetString(0)] = new PgLlmPrice { InputPerMillion = reader.GetDecimal(1), OutputPerMillion = reader.GetDecimal(2) };
        }

        return prices;
    }
}
