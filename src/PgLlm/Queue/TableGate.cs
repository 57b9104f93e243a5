using System.Collections.Concurrent;
using Npgsql;
using PgLlm.Migrations;

namespace PgLlm.Queue;

/// <summary>
/// The worker's table check (<see cref="TableCheck"/>, the migrator's own) between the claim and the model
/// call: a task whose table no longer has what it reads or writes, or whose target can no longer hold its
/// answers, fails its claimed jobs as permanent with the check's message, and no call is spent. A verdict
/// is cached per task: a table that matched is checked again after <see cref="Recheck"/>, or at once when a
/// read or write-back fails for a schema reason (<see cref="IsSchemaError"/>); a table that did not match is
/// checked at every claim, so a fixed table is picked up at once. The hot path is a dictionary lookup.
/// </summary>
internal sealed class TableGate(TimeProvider time)
{
    /// <summary>How long a table that matched is trusted without looking at the catalog again.</summary>
    public static readonly TimeSpan Recheck = TimeSpan.FromSeconds(30);

    private readonly ConcurrentDictionary<string, Verdict> _verdicts = new(StringComparer.Ordinal);

    /// <summary>
    /// The SQLSTATEs of a statement that met a table unlike the one it was written for: an undefined column
    /// or table, a type mismatch, a value the column's type cannot read.
    /// </summary>
    public static bool IsSchemaError(Exception exception) =>
        exception is PostgresException { SqlState: PostgresErrorCodes.UndefinedColumn or PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.DatatypeMismatch or PostgresErrorCodes.InvalidTextRepresentation };

    /// <summary>The task's table problems (one line each), or null when it is as the task expects.</summary>
    public async ValueTask<string?> ProblemAsync(NpgsqlConnection connection, TaskDefinition task, CancellationToken cancellationToken)
    {
        if (task.Table is null)
        {
            return null;
        }

        if (_verdicts.TryGetValue(task.Name, out var verdict) && ReferenceEquals(verdict.Task, task)
            && verdict.Problem is null && time.GetElapsedTime(verdict.CheckedAt) < Recheck)
        {
            return null;
        }

        var problems = await TableCheck.ProblemsAsync(connection, [task.Table], cancellationToken).ConfigureAwait(false);
        var problem = problems.Count == 0 ? null : string.Join("\n", problems);
        _verdicts[task.Name] = new Verdict(task, problem, time.GetTimestamp());
        return problem;
    }

    /// <summary>Forgets the task's verdict (a statement failed for a schema reason): the next look checks the catalog.</summary>
    public void Forget(string taskName) => _verdicts.TryRemove(taskName, out _);

    private sealed record Verdict(TaskDefinition Task, string? Problem, long CheckedAt);
}
