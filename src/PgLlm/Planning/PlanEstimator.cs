using System.Text.Json;
using Npgsql;

namespace PgLlm.Planning;

/// <summary>
/// Makes each task's plan (<see cref="TaskPlan"/>): its rows by version (<c>llm.task_rows</c>, one scan of the task's
/// table) and what re-running its stale rows would take.
/// </summary>
/// <remarks>
/// <para>Input tokens: from the task's own history when it has answered jobs under its current definition (the average
/// input tokens of first-attempt, succeeded jobs not answered by the cache, <c>llm.task_token_history</c>); otherwise
/// from the prompt's length: the current definition's system prompt and template rendered over a sample of the stale
/// rows (<see cref="PromptSample"/> rows), converted to tokens at the characters per token the task's history shows
/// (the same rows rendered under the definition that wrote them, against the tokens their jobs recorded), else at
/// <see cref="DefaultCharactersPerToken"/>.</para>
/// <para>Output tokens: from the history under the current definition, else under any definition, else a guess from
/// the answer's JSON schema. Cost: at the configured prices (<c>PgLlm:Prices</c>, then <c>llm.model_price</c>; the task's
/// model, else <c>*</c>, as <c>llm.task_price</c> prices it). Time: see <see cref="PlanDuration"/>.</para>
/// </remarks>
public static class PlanEstimator
{
    /// <summary>The stale rows rendered for a prompt-length estimate.</summary>
    public const int PromptSample = 200;

    /// <summary>The characters per token assumed when the task's history gives no ratio.</summary>
    public const double DefaultCharactersPerToken = 4;

    /// <summary>
    /// The plan of every registered task, or of <paramref name="task"/> only. <paramref name="options"/> gives the
    /// configured prices, endpoints, limits and concurrency; without them only the database's are used.
    /// </summary>
    public static async Task<IReadOnlyList<TaskPlan>> ReadAsync(
        NpgsqlDataSource dataSource, PgLlmOptions? options, string? task = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var plans = new List<TaskPlan>();
        foreach (var row in await PlannedTask.ReadAsync(dataSource, task, cancellationToken).ConfigureAwait(false))
        {
            plans.Add(await EstimateAsync(dataSource, options, row, cancellationToken).ConfigureAwait(false));
        }

        return plans;
    }

    private static async Task<TaskPlan> EstimateAsync(NpgsqlDataSource dataSource, PgLlmOptions? options, PlannedTask task, CancellationToken cancellationToken)
    {
        var rows = await RowsAsync(dataSource, task.Name, cancellationToken).ConfigureAwait(false);
        var history = await TokenHistory.ReadAsync(dataSource, task.Name, cancellationToken).ConfigureAwait(false);
        var estimate = new RerunEstimate { Rows = rows.Stale };
        if (rows.Stale > 0)
        {
            estimate = await TokensAsync(dataSource, task, history, rows.Stale, cancellationToken).ConfigureAwait(false);
            var price = await PlanPrices.ForModelAsync(dataSource, options, task.Model, cancellationToken).ConfigureAwait(false);
            estimate = estimate with
            {
                EstimatedCost = price is null ? null : PlanPrices.CostOf(price, estimate.InputTokens, estimate.OutputTokens, batch: false),
                EstimatedBatchCost = price is null ? null : PlanPrices.CostOf(price, estimate.InputTokens, estimate.OutputTokens, batch: true),
            };
            estimate = await PlanDuration.EstimateAsync(dataSource, options, task.Model, history, estimate, cancellationToken).ConfigureAwait(false);
        }

        return new TaskPlan(task.Name, task.Model, task.DefinitionHash, rows, estimate)
        {
            EditedCells = await EditedCellsAsync(dataSource, task.Name, cancellationToken).ConfigureAwait(false),
        };
    }

    /// <summary>
    /// The task's target cells a person or an application edited, from <c>llm.edited_cells(task)</c> where the queue has
    /// it (edited cells, a later queue step); null (not counted) where it does not.
    /// </summary>
    private static async Task<long?> EditedCellsAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using (var exists = dataSource.CreateCommand("SELECT to_regprocedure('llm.edited_cells(text)') IS NOT NULL"))
        {
            if (await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is not true)
            {
                return null;
            }
        }

        await using var command = dataSource.CreateCommand("SELECT llm.edited_cells($1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long count ? count : null;
    }

    private static async Task<TaskRowCounts> RowsAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT total, current, stale, never_filled FROM llm.task_rows($1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new TaskRowCounts(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3));
    }

    /// <summary>The input and output tokens of re-running <paramref name="stale"/> rows.</summary>
    private static async Task<RerunEstimate> TokensAsync(
        NpgsqlDataSource dataSource, PlannedTask task, TokenHistory history, long stale, CancellationToken cancellationToken)
    {
        RerunEstimate estimate;
        if (history.Of(task.DefinitionHash) is { } current)
        {
            estimate = new RerunEstimate
            {
                InputTokens = (long)Math.Round(current.AverageInput * stale),
                InputSource = TokenEstimateSource.CurrentHistory,
                HistoryJobs = current.Jobs,
            };
        }
        else
        {
            var length = await PromptLength.MeasureAsync(dataSource, task, PromptSample, cancellationToken).ConfigureAwait(false);
            var perToken = length.CharactersPerToken ?? DefaultCharactersPerToken;
            estimate = new RerunEstimate
            {
                InputTokens = (long)Math.Round(length.AverageCharacters / perToken * stale),
                InputSource = length.CharactersPerToken is null ? TokenEstimateSource.PromptLengthDefaultRatio : TokenEstimateSource.PromptLengthWithHistoryRatio,
                CharactersPerToken = perToken,
                HistoryJobs = length.RatioJobs,
            };
        }

        var (output, source) = history.Of(task.DefinitionHash) is { } own ? (own.AverageOutput, TokenEstimateSource.CurrentHistory)
            : history.AnyOutput is { } any ? (any, TokenEstimateSource.AnyHistory)
            : (SchemaGuess.OutputTokens(task.JsonSchema), TokenEstimateSource.SchemaGuess);
        return estimate with { Rows = stale, OutputTokens = (long)Math.Round(output * stale), OutputSource = source };
    }
}
