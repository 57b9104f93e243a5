using System.Runtime.CompilerServices;
using Npgsql;

namespace PgLlm.OperationsConsole;

/// <summary>
/// Each task's coverage and stale rows (<c>llm.console_coverage</c>: a count of the task's <c>llm.row_version</c> rows, which
/// grows with the table: 35 ms for 250,000 rows), read once per data source every <see cref="CoverageFor"/> rather than at
/// each refresh of the overview (and at once for a task not read yet).
/// </summary>
internal static class ConsoleCoverage
{
    /// <summary>How long the figures are kept before they are read again.</summary>
    public static readonly TimeSpan CoverageFor = TimeSpan.FromSeconds(30);

    private static readonly ConditionalWeakTable<NpgsqlDataSource, Holder> Cache = new();

    public static async Task<IReadOnlyDictionary<string, (long Filled, long Stale, long? TableRows)>> ReadAsync(
        NpgsqlDataSource dataSource, NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var holder = Cache.GetValue(dataSource, _ => new Holder());
        if (Volatile.Read(ref holder.Last) is { } last && DateTimeOffset.UtcNow - last.ReadAt < CoverageFor
            && await TaskCountAsync(connection, cancellationToken).ConfigureAwait(false) == last.Rows.Count)
        {
            return last.Rows;
        }

        await using var command = new NpgsqlCommand(
            "SELECT t.name, c.filled, c.stale, c.table_rows FROM llm.task AS t CROSS JOIN LATERAL llm.console_coverage(t.name) AS c", connection);
        var rows = new Dictionary<string, (long, long, long?)>(StringComparer.Ordinal);
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                rows[reader.GetString(0)] = (reader.IsDBNull(1) ? 0 : reader.GetInt64(1), reader.IsDBNull(2) ? 0 : reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetInt64(3));
            }
        }

        Volatile.Write(ref holder.Last, new Snapshot(DateTimeOffset.UtcNow, rows));
        return rows;
    }

    private static async Task<long> TaskCountAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT count(*) FROM llm.task", connection);
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private sealed class Holder
    {
        public Snapshot? Last;
    }

    private sealed record Snapshot(DateTimeOffset ReadAt, IReadOnlyDictionary<string, (long Filled, long Stale, long? TableRows)> Rows);
}
