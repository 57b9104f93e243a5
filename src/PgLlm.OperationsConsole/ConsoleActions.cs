using System.Text.Json;
using Npgsql;

namespace PgLlm.OperationsConsole;

/// <summary>
/// The console's actions. Each runs in one transaction with its entry in the action log (<c>llm.console_log</c>):
/// an action that fails leaves no entry, and one that commits always has one.
/// </summary>
public static class ConsoleActions
{
    /// <summary>Re-drives dead letters by id (<c>llm.retry_failed(task, id)</c> each). Returns how many went back to pending.</summary>
    public static async Task<int> RetryAsync(NpgsqlDataSource dataSource, string actor, IReadOnlyCollection<long> jobIds, string target, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(jobIds);
        return await InTransactionAsync(dataSource, async (connection, ct) =>
        {
            await using var command = new NpgsqlCommand(
                "SELECT coalesce(sum(llm.retry_failed(j.task, j.id)), 0)::integer FROM llm.job AS j WHERE j.id = ANY ($1) AND j.state = 'failed'", connection);
            command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = jobIds.ToArray() });
            var retried = (int)(await command.ExecuteScalarAsync(ct).ConfigureAwait(false))!;
            await LogAsync(connection, actor, "retry", target, new { jobs = jobIds.Count, retried }, ct).ConfigureAwait(false);
            return retried;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Pauses a task (<c>llm.pause_task</c>): no worker claims its jobs until it is resumed. False when it was paused already.</summary>
    public static Task<bool> PauseAsync(NpgsqlDataSource dataSource, string actor, string task, CancellationToken cancellationToken = default) =>
        InTransactionAsync(dataSource, async (connection, ct) =>
        {
            var paused = await ScalarAsync<bool>(connection, "SELECT llm.pause_task($1, $2)", ct, task, actor).ConfigureAwait(false);
            await LogAsync(connection, actor, "pause", task, new { changed = paused }, ct).ConfigureAwait(false);
            return paused;
        }, cancellationToken);

    /// <summary>Resumes a paused task (<c>llm.resume_task</c>). False when it was not paused.</summary>
    public static Task<bool> ResumeAsync(NpgsqlDataSource dataSource, string actor, string task, CancellationToken cancellationToken = default) =>
        InTransactionAsync(dataSource, async (connection, ct) =>
        {
            var resumed = await ScalarAsync<bool>(connection, "SELECT llm.resume_task($1)", ct, task).ConfigureAwait(false);
            await LogAsync(connection, actor, "resume", task, new { changed = resumed }, ct).ConfigureAwait(false);
            return resumed;
        }, cancellationToken);

    /// <summary>Removes the edited mark of one target cell, so that the row's next job writes it again. False when it had none.</summary>
    public static Task<bool> ReleaseCellAsync(NpgsqlDataSource dataSource, string actor, string table, string rowKey, string column, CancellationToken cancellationToken = default) =>
        InTransactionAsync(dataSource, async (connection, ct) =>
        {
            var released = await ScalarAsync<bool>(connection, "SELECT llm.console_release_cell($1::regclass, $2::jsonb, $3)", ct, table, rowKey, column).ConfigureAwait(false);
            await LogAsync(connection, actor, "release-cell", table + " " + rowKey + " " + column, new { released }, ct).ConfigureAwait(false);
            return released;
        }, cancellationToken);

    /// <summary>Asks for a batch to be cancelled (<c>llm.batch_cancel</c>). Returns the batch's state.</summary>
    public static Task<string> CancelBatchAsync(NpgsqlDataSource dataSource, string actor, long batchId, CancellationToken cancellationToken = default) =>
        InTransactionAsync(dataSource, async (connection, ct) =>
        {
            var state = await ScalarAsync<string>(connection, "SELECT llm.batch_cancel($1, $2)", ct, batchId, actor).ConfigureAwait(false);
            await LogAsync(connection, actor, "cancel-batch", batchId.ToString(System.Globalization.CultureInfo.InvariantCulture), new { state }, ct).ConfigureAwait(false);
            return state;
        }, cancellationToken);

    private static async Task<T> InTransactionAsync<T>(NpgsqlDataSource dataSource, Func<NpgsqlConnection, CancellationToken, Task<T>> action, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        var result = await action(connection, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return result;
    }

    private static async Task LogAsync(NpgsqlConnection connection, string actor, string action, string? target, object detail, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT llm.console_log($1, $2, $3, $4::jsonb)", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = actor });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = action });
        command.Parameters.Add(new NpgsqlParameter<string?> { TypedValue = target, NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = JsonSerializer.Serialize(detail) });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object[] values)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var value in values)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
        }

        return (T)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }
}
