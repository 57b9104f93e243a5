using Npgsql;

namespace PgLlm.Queue;

/// <summary>
/// Operations on the queue for people and tools: re-driving failed jobs (the dead letters) and
/// pruning finished history. The same operations exist as SQL functions: <c>llm.retry_failed</c>
/// and <c>llm.prune</c>.
/// </summary>
public sealed class PgLlmQueueAdmin
{
    private readonly NpgsqlDataSource _dataSource;

    /// <summary>Creates the queue handle.</summary>
    public PgLlmQueueAdmin(NpgsqlDataSource dataSource)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        _dataSource = dataSource;
    }

    /// <summary>
    /// Puts failed jobs back in the queue with a fresh set of attempts, keeping their error history:
    /// all of them, those of one task, or one job. Returns the number re-driven.
    /// </summary>
    public async Task<int> RetryFailedAsync(string? task = null, long? jobId = null, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT llm.retry_failed($1, $2)");
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)task ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter { Value = (object?)jobId ?? DBNull.Value, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Bigint });
        return (int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>Deletes succeeded, superseded and skipped jobs finished more than <paramref name="olderThan"/> ago. Returns the number deleted.</summary>
    public async Task<int> PruneAsync(TimeSpan olderThan, CancellationToken cancellationToken = default)
    {
        using var queue = new JobQueue(_dataSource);
        return await queue.PruneAsync(olderThan, cancellationToken).ConfigureAwait(false);
    }
}
