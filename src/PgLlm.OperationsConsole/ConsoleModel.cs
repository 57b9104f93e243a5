namespace PgLlm.OperationsConsole;

/// <summary>One task's figures on the overview.</summary>
/// <param name="Task">The task's name.</param>
/// <param name="Model">The model it names; null for the worker's default.</param>
/// <param name="PausedAt">When it was paused; null when it is not.</param>
/// <param name="PausedBy">Who paused it.</param>
/// <param name="Pending">Jobs waiting (retries included).</param>
/// <param name="Running">Jobs with a worker or in a batch.</param>
/// <param name="Failed">Dead letters.</param>
/// <param name="OldestPending">Age of the oldest pending job; null when none waits.</param>
/// <param name="Filled">Rows holding an answer (<c>llm.row_version</c>).</param>
/// <param name="Stale">Of those, rows written by another definition than the current one.</param>
/// <param name="TableRows">Rows of the task's table, as PostgreSQL's statistics estimate them; null before the table was analyzed.</param>
/// <param name="EditedCells">Target cells people edited (kept by the write-back).</param>
public sealed record ConsoleTask(
    string Task, string? Model, DateTimeOffset? PausedAt, string? PausedBy, long Pending, long Running, long Failed,
    TimeSpan? OldestPending, long Filled, long Stale, long? TableRows, long EditedCells)
{
    /// <summary>Jobs that finished in each bucket of the last 24 hours, by state, oldest first.</summary>
    public IReadOnlyList<ConsoleBucket> Buckets { get; init; } = [];

    /// <summary>Tokens and estimated cost per UTC day of the last 7 days, oldest first.</summary>
    public IReadOnlyList<ConsoleDay> Days { get; init; } = [];

    /// <summary>Jobs that succeeded in the last hour.</summary>
    public long SucceededLastHour { get; init; }

    /// <summary>Jobs that finished in the last 24 hours, by state.</summary>
    public IReadOnlyDictionary<string, long> Finished24h { get; init; } = new Dictionary<string, long>();

    /// <summary>Answers of the last 24 hours that came from the answer cache.</summary>
    public long CacheHits24h { get; init; }

    /// <summary>Filled rows over the table's rows (0 to 1); null when the table's size is not known.</summary>
    public double? Coverage => TableRows is > 0 ? Math.Min(1.0, (double)Filled / TableRows.Value) : null;

    /// <summary>The time the pending jobs take at the last hour's rate; null when nothing succeeded in the last hour.</summary>
    public TimeSpan? Eta => Pending == 0 ? TimeSpan.Zero : SucceededLastHour > 0 ? TimeSpan.FromHours((double)Pending / SucceededLastHour) : null;

    /// <summary>Cache hits over the jobs answered in the last 24 hours (0 to 1); null when none.</summary>
    public double? CacheHitRate =>
        Finished24h.TryGetValue("succeeded", out var succeeded) && succeeded > 0 ? (double)CacheHits24h / succeeded : null;

    /// <summary>Today's (UTC) tokens and cost.</summary>
    public ConsoleDay Today => Days.Count > 0 && Days[^1].Day == DateOnly.FromDateTime(DateTime.UtcNow) ? Days[^1] : new ConsoleDay(DateOnly.FromDateTime(DateTime.UtcNow), 0, 0, 0, null);
}

/// <summary>Jobs of a task that finished in one bucket of time.</summary>
/// <param name="Start">The bucket's start.</param>
/// <param name="Finished">Jobs that finished in it (every final state).</param>
/// <param name="Succeeded">Of those, jobs that succeeded.</param>
/// <param name="LatencySeconds">Average seconds from claim to settle of the succeeded jobs the model answered; null when none.</param>
public sealed record ConsoleBucket(DateTimeOffset Start, long Finished, long Succeeded, double? LatencySeconds);

/// <summary>A task's tokens and estimated cost on one UTC day (jobs that finished that day).</summary>
/// <param name="Day">The day.</param>
/// <param name="Jobs">Jobs that finished.</param>
/// <param name="InputTokens">Their input tokens.</param>
/// <param name="OutputTokens">Their output tokens.</param>
/// <param name="Cost">Their estimated cost; null when no price was known.</param>
public sealed record ConsoleDay(DateOnly Day, long Jobs, long InputTokens, long OutputTokens, decimal? Cost);

/// <summary>Dead letters of a task that share their last error.</summary>
/// <param name="Task">The task.</param>
/// <param name="Error">The last error (null when none was recorded).</param>
/// <param name="Count">How many.</param>
/// <param name="Latest">When the latest of them failed.</param>
/// <param name="JobIds">Up to 20 of their job ids, latest first.</param>
public sealed record ConsoleFailureGroup(string Task, string? Error, long Count, DateTimeOffset? Latest, IReadOnlyList<long> JobIds);

/// <summary>One job, as the search and a row's history show it.</summary>
/// <param name="Id">The job's id.</param>
/// <param name="Task">Its task.</param>
/// <param name="RowKey">Its row's key (JSON).</param>
/// <param name="State">Its state.</param>
/// <param name="Attempt">Attempts made.</param>
/// <param name="Answer">The answer written to the row (JSON); null when none.</param>
/// <param name="Model">The model that answered.</param>
/// <param name="InputTokens">Input tokens of every attempt.</param>
/// <param name="OutputTokens">Output tokens of every attempt.</param>
/// <param name="Cost">Estimated cost.</param>
/// <param name="CacheHit">Whether the answer cache answered.</param>
/// <param name="LastError">The last error.</param>
/// <param name="Errors">Every attempt's error (JSON array).</param>
/// <param name="CreatedAt">When it was enqueued.</param>
/// <param name="AttemptedAt">When its latest attempt started.</param>
/// <param name="FinishedAt">When it ended.</param>
public sealed record ConsoleJob(
    long Id, string Task, string RowKey, string State, int Attempt, string? Answer, string? Model, int? InputTokens, int? OutputTokens,
    decimal? Cost, bool? CacheHit, string? LastError, string Errors, DateTimeOffset CreatedAt, DateTimeOffset? AttemptedAt, DateTimeOffset? FinishedAt);

/// <summary>A target cell of a row that someone other than PgLlm edited.</summary>
/// <param name="Table">The table (schema-qualified, quoted).</param>
/// <param name="Column">The column.</param>
/// <param name="EditedAt">When.</param>
/// <param name="EditedBy">By whom.</param>
public sealed record ConsoleEditedCell(string Table, string Column, DateTimeOffset EditedAt, string EditedBy);

/// <summary>A batch of the batch tier (<c>llm.batch</c>).</summary>
/// <param name="Id">Its id.</param>
/// <param name="Endpoint">The endpoint.</param>
/// <param name="Model">The model.</param>
/// <param name="State">Its state.</param>
/// <param name="Lines">Requests in it.</param>
/// <param name="Succeeded">Lines answered.</param>
/// <param name="Failed">Lines failed.</param>
/// <param name="Missing">Lines missing from the output.</param>
/// <param name="CreatedAt">When it was made.</param>
/// <param name="SubmittedAt">When it was submitted.</param>
/// <param name="ExpectedBy">When the provider should have answered.</param>
/// <param name="CancelRequestedAt">When a cancel was asked for.</param>
public sealed record ConsoleBatch(
    long Id, string Endpoint, string Model, string State, int Lines, int Succeeded, int Failed, int Missing,
    DateTimeOffset CreatedAt, DateTimeOffset? SubmittedAt, DateTimeOffset? ExpectedBy, DateTimeOffset? CancelRequestedAt)
{
    /// <summary>Whether the batch is still open (a cancel can be asked for).</summary>
    public bool Open => State is not ("done" or "failed" or "expired" or "cancelled");
}

/// <summary>An entry of the action log (<c>llm.console_action</c>).</summary>
/// <param name="Id">Its id.</param>
/// <param name="At">When.</param>
/// <param name="Actor">Who (the user the host authenticated).</param>
/// <param name="Role">The database role the action ran as.</param>
/// <param name="Action">What.</param>
/// <param name="Target">On what.</param>
/// <param name="Detail">Its outcome (JSON).</param>
public sealed record ConsoleAction(long Id, DateTimeOffset At, string Actor, string Role, string Action, string? Target, string Detail);
