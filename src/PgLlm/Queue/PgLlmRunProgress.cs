namespace PgLlm.Queue;

/// <summary>
/// A re-run's (or backfill's) progress and spend (<c>llm.run</c> with <c>llm.run_progress</c>): the rows it selected,
/// how many it has walked, the jobs it made by state, and what they cost.
/// </summary>
/// <param name="Id">The run's id (<c>llm.run.id</c>, carried by its jobs as <c>llm.job.run_id</c>).</param>
/// <param name="Rows">The rows it selected when it started.</param>
/// <param name="Position">The rows walked so far (enqueued or passed over).</param>
/// <param name="Enqueued">Jobs it enqueued.</param>
/// <param name="Skipped">Rows passed over: current again, or already with a job pending or running.</param>
/// <param name="Pending">Its jobs waiting.</param>
/// <param name="Running">Its jobs with the model.</param>
/// <param name="Succeeded">Its jobs answered and written.</param>
/// <param name="Failed">Its jobs that failed (dead letters).</param>
/// <param name="Other">Its jobs superseded or skipped.</param>
/// <param name="InputTokens">Input tokens of every attempt of its jobs.</param>
/// <param name="OutputTokens">Output tokens of every attempt of its jobs.</param>
/// <param name="Spent">The estimated cost of those tokens (<c>llm.job.estimated_cost</c>); null when no price is known.</param>
/// <param name="MaxCost">Its cost cap; null when none.</param>
public sealed record PgLlmRunProgress(
    long Id, long Rows, long Position, long Enqueued, long Skipped, long Pending, long Running, long Succeeded, long Failed, long Other,
    long InputTokens, long OutputTokens, decimal? Spent, decimal? MaxCost)
{
    /// <summary>Whether every row has been walked.</summary>
    public bool AllEnqueued => Position >= Rows;

    /// <summary>Whether some of its jobs still wait or run.</summary>
    public bool InFlight => Pending + Running > 0;

    /// <summary>Rows done with: passed over, or their job finished.</summary>
    public long Handled => Skipped + Succeeded + Failed + Other;
}
