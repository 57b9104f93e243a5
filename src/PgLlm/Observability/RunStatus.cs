using Npgsql;

namespace PgLlm.Observability;

/// <summary>
/// A re-run or backfill in progress (<c>llm.run_status</c>): unfinished, or finished with jobs still pending or
/// running; shown by <c>pgllm status</c>.
/// </summary>
/// <param name="Id">The run's id (<c>llm.run.id</c>).</param>
/// <param name="Task">The task it re-runs.</param>
/// <param name="Kind"><c>rerun</c> or <c>backfill</c>.</param>
/// <param name="Selection">Its rows: <c>stale</c>, <c>never_filled</c> (re-runs), <c>empty</c> or <c>all</c> (backfills).</param>
/// <param name="Rows">Rows it selected (a backfill: scanned so far).</param>
/// <param name="Enqueued">Jobs it enqueued.</param>
/// <param name="Skipped">Rows passed over.</param>
/// <param name="Pending">Its jobs waiting.</param>
/// <param name="Running">Its jobs with the model.</param>
/// <param name="Succeeded">Its jobs done.</param>
/// <param name="Failed">Its jobs failed.</param>
/// <param name="Spent">Estimated cost of its jobs' tokens; null when no price is known.</param>
/// <param name="MaxCost">Its cost cap; null when none.</param>
/// <param name="Finished">Whether it has enqueued all it will (its remaining jobs still run).</param>
public sealed record RunStatus(
    long Id, string Task, string Kind, string Selection, long Rows, long Enqueued, long Skipped, long Pending, long Running,
    long Succeeded, long Failed, decimal? Spent, decimal? MaxCost, bool Finished)
{
    /// <summary>The runs in progress; empty when none, or when the queue predates runs.</summary>
    public static async Task<IReadOnlyList<RunStatus>> ReadAllAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        var all = new List<RunStatus>();
        try
        {
            await using var command = dataSource.CreateCommand(
                "SELECT id, task, kind, selection, rows, enqueued, skipped, pending, running, succeeded, failed, spent, max_cost, finished_at IS NOT NULL FROM llm.run_status()");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                all.Add(new RunStatus(
                    reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3),
                    reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6), reader.GetInt64(7), reader.GetInt64(8),
                    reader.GetInt64(9), reader.GetInt64(10),
                    reader.IsDBNull(11) ? null : reader.GetDecimal(11),
                    reader.IsDBNull(12) ? null : reader.GetDecimal(12),
                    reader.GetBoolean(13)));
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedFunction or PostgresErrorCodes.InsufficientPrivilege)
        {
            // The queue predates runs, or the role may not read them: nothing to show.
        }

        return all;
    }
}
