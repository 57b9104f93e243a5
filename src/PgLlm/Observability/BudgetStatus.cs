using System.Globalization;
using Npgsql;

namespace PgLlm.Observability;

/// <summary>
/// One daily budget (table <c>llm.budget</c>) with today's use: a cap of tokens and/or estimated cost per UTC day for
/// a task or an endpoint, shared by every worker of the database. At its cap the task's or endpoint's jobs wait
/// (pending, no attempt spent) until 00:00 UTC or until the cap is raised or cleared.
/// </summary>
/// <param name="Scope"><c>task</c> or <c>endpoint</c>.</param>
/// <param name="Name">The task's name, or the endpoint's (<c>default</c> for the unnamed one).</param>
/// <param name="DailyTokens">The cap of input + output tokens per UTC day; null when none.</param>
/// <param name="DailyCost">The cap of estimated cost (from the prices) per UTC day; null when none.</param>
/// <param name="SpentTokens">Tokens of today's settled attempts.</param>
/// <param name="SpentCost">Estimated cost of today's settled attempts.</param>
/// <param name="ReservedTokens">Estimated tokens of the attempts in flight.</param>
/// <param name="ReservedCost">Estimated cost of the attempts in flight.</param>
/// <param name="Waiting">Whether its jobs wait at the cap.</param>
/// <param name="Reason">Why it waits (<c>daily cost cap 5.00 reached</c>); null when it does not.</param>
/// <param name="Day">The UTC day counted.</param>
public sealed record BudgetStatus(
    string Scope, string Name, long? DailyTokens, decimal? DailyCost, long SpentTokens, decimal SpentCost,
    long ReservedTokens, decimal ReservedCost, bool Waiting, string? Reason, DateOnly Day)
{
    /// <summary>The NOTIFY channel <c>llm.budget_set</c> and <c>llm.budget_clear</c> signal.</summary>
    public const string Channel = "pgllm_budgets";

    /// <summary>What a waiting budget's jobs wait for, to show next to its reason.</summary>
    public const string ResumesWhen = "resumes 00:00 UTC or when raised";

    /// <summary>The tokens left today (cap minus spent and reserved, not below 0); null without a token cap.</summary>
    public long? TokensLeft => DailyTokens is { } cap ? Math.Max(0, cap - SpentTokens - ReservedTokens) : null;

    /// <summary>The cost left today (cap minus spent and reserved, not below 0); null without a cost cap.</summary>
    public decimal? CostLeft => DailyCost is { } cap ? Math.Max(0, cap - SpentCost - ReservedCost) : null;

    /// <summary>One line: <c>waiting: daily cost cap 5.00 reached, resumes 00:00 UTC or when raised</c>, or <c>open</c>.</summary>
    public string Describe() => Waiting ? $"waiting: {Reason}, {ResumesWhen}" : "open";

    /// <summary>Every budget with today's use (settling finished attempts first); empty when none, or when the queue predates budgets.</summary>
    public static async Task<IReadOnlyList<BudgetStatus>> ReadAllAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var all = new List<BudgetStatus>();
        try
        {
            await using var command = dataSource.CreateCommand(
                "SELECT scope, name, daily_tokens, daily_cost, spent_tokens, spent_cost, reserved_tokens, reserved_cost, waiting, reason, day FROM llm.budget_state()");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                all.Add(new BudgetStatus(
                    reader.GetString(0),
                    reader.GetString(1),
                    reader.IsDBNull(2) ? null : reader.GetInt64(2),
                    reader.IsDBNull(3) ? null : reader.GetDecimal(3),
                    reader.GetInt64(4),
                    reader.GetDecimal(5),
                    reader.GetInt64(6),
                    reader.GetDecimal(7),
                    reader.GetBoolean(8),
                    reader.IsDBNull(9) ? null : reader.GetString(9),
                    reader.GetFieldValue<DateOnly>(10)));
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedFunction or PostgresErrorCodes.InsufficientPrivilege)
        {
            // The queue predates budgets, or the role may not read them: nothing to show.
        }

        return all;
    }

    /// <summary>Sets (or raises, lowers) a budget: <c>llm.budget_set</c>. A null cap is none; one must be given.</summary>
    public static async Task SetAsync(NpgsqlDataSource dataSource, string scope, string name, long? dailyTokens, decimal? dailyCost, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT llm.budget_set($1, $2, $3, $4)");
        command.Parameters.Add(new NpgsqlParameter { Value = scope });
        command.Parameters.Add(new NpgsqlParameter { Value = name });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)dailyTokens ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)dailyCost ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Numeric });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Removes a budget: <c>llm.budget_clear</c>; false when there was none.</summary>
    public static async Task<bool> ClearAsync(NpgsqlDataSource dataSource, string scope, string name, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var command = dataSource.CreateCommand("SELECT llm.budget_clear($1, $2)");
        command.Parameters.Add(new NpgsqlParameter { Value = scope });
        command.Parameters.Add(new NpgsqlParameter { Value = name });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is true;
    }

    /// <summary>A cost as the budgets show it (invariant culture, up to 6 decimals).</summary>
    public static string FormatCost(decimal cost) => cost.ToString("0.00####", CultureInfo.InvariantCulture);
}
