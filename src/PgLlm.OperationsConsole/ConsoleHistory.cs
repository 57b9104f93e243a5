using System.Runtime.CompilerServices;
using Npgsql;
using static PgLlm.OperationsConsole.ConsoleQueries;

namespace PgLlm.OperationsConsole;

/// <summary>
/// The overview's history: the last 24 hours read at every refresh (one walk of <c>job_not_pending</c> over the
/// window, by state and finished time), and the earlier days of the week, which no longer change but for a retried dead
/// letter, read once per data source every <see cref="PastDaysFor"/> (and when the UTC day changes).
/// </summary>
internal sealed class ConsoleHistory
{
    /// <summary>How long the earlier days' tokens and cost are kept before they are read again.</summary>
    public static readonly TimeSpan PastDaysFor = TimeSpan.FromMinutes(10);

    private const string FinalStates = "j.state IN ('succeeded', 'failed', 'superseded', 'skipped')";

    private const string WindowSql = $"""
        SELECT j.task, j.state::text, date_bin($2, j.finished_at, $1), count(*),
               coalesce(sum(j.input_tokens), 0)::bigint, coalesce(sum(j.output_tokens), 0)::bigint, sum(j.estimated_cost),
               avg(extract(epoch FROM j.finished_at - j.attempted_at)::float8) FILTER (WHERE j.state = 'succeeded' AND j.cache_hit IS NOT TRUE),
               count(*) FILTER (WHERE j.cache_hit)
          FROM llm.job AS j
         WHERE {FinalStates} AND j.finished_at >= $1
         GROUP BY 1, 2, 3
        """;

    private const string PastDaysSql = $"""
        SELECT j.task, (j.finished_at AT TIME ZONE 'UTC')::date, count(*),
               coalesce(sum(j.input_tokens), 0)::bigint, coalesce(sum(j.output_tokens), 0)::bigint, sum(j.estimated_cost)
          FROM llm.job AS j
         WHERE {FinalStates} AND j.finished_at >= $1 AND j.finished_at < $2
         GROUP BY 1, 2
        """;

    private static readonly ConditionalWeakTable<NpgsqlDataSource, PastDays> PastDaysCache = new();

    private readonly DateTimeOffset _windowStart;
    private readonly DateOnly _today;
    private readonly Dictionary<string, Dictionary<DateTimeOffset, Bucket>> _buckets = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Dictionary<string, long>> _states = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _cacheHits = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<ConsoleDay>> _pastDays;

    private ConsoleHistory(DateTimeOffset windowStart, DateOnly today, Dictionary<string, List<ConsoleDay>> pastDays)
    {
        _windowStart = windowStart;
        _today = today;
        _pastDays = pastDays;
    }

    public static async Task<ConsoleHistory> ReadAsync(NpgsqlDataSource dataSource, NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var now = DateTimeOffset.UtcNow;
        var today = DateOnly.FromDateTime(now.UtcDateTime);
        var pastDays = await PastDaysCache.GetValue(dataSource, _ => new PastDays()).ReadAsync(connection, today, cancellationToken).ConfigureAwait(false);
        var history = new ConsoleHistory(AlignedWindowStart(now), today, pastDays);
        await using var command = new NpgsqlCommand(WindowSql, connection);
        command.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = history._windowStart });
        command.Parameters.Add(new NpgsqlParameter<TimeSpan> { TypedValue = BucketWidth });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            history.Add(reader.GetString(0), reader.GetString(1), reader.GetFieldValue<DateTimeOffset>(2), new Bucket(
                reader.GetInt64(3), reader.GetString(1) == "succeeded" ? reader.GetInt64(3) : 0, reader.IsDBNull(7) ? null : reader.GetDouble(7),
                reader.GetInt64(4), reader.GetInt64(5), reader.IsDBNull(6) ? null : reader.GetDecimal(6)), reader.GetInt64(8));
        }

        return history;
    }

    /// <summary>The chart window's start, on a bucket boundary (so that buckets stay put between refreshes, and UTC midnight is one).</summary>
    internal static DateTimeOffset AlignedWindowStart(DateTimeOffset now)
    {
        var start = now - ChartWindow + BucketWidth;
        return new DateTimeOffset(start.UtcTicks - (start.UtcTicks % BucketWidth.Ticks), TimeSpan.Zero);
    }

    public ConsoleTask Complete(ConsoleTask task)
    {
        var buckets = _buckets.GetValueOrDefault(task.Task) ?? [];
        var count = (int)(ChartWindow.Ticks / BucketWidth.Ticks);
        var series = Enumerable.Range(0, count).Select(i => _windowStart + (BucketWidth * i)).ToList();
        var midnight = new DateTimeOffset(_today.ToDateTime(TimeOnly.MinValue), TimeSpan.Zero);
        var todays = buckets.Where(b => b.Key >= midnight).Select(b => b.Value).ToList();
        var today = new ConsoleDay(_today, todays.Sum(b => b.Finished), todays.Sum(b => b.InputTokens), todays.Sum(b => b.OutputTokens),
            todays.Any(b => b.Cost is not null) ? todays.Sum(b => b.Cost ?? 0) : null);
        var hourAgo = DateTimeOffset.UtcNow - TimeSpan.FromHours(1);
        return task with
        {
            Buckets = series.Select(start => buckets.TryGetValue(start, out var b)
                ? new ConsoleBucket(start, b.Finished, b.Succeeded, b.LatencySeconds) : new ConsoleBucket(start, 0, 0, null)).ToList(),
            Days = [.. (_pastDays.GetValueOrDefault(task.Task) ?? []).OrderBy(d => d.Day), .. today.Jobs > 0 ? [today] : Array.Empty<ConsoleDay>()],
            SucceededLastHour = buckets.Where(b => b.Key + BucketWidth > hourAgo).Sum(b => b.Value.Succeeded),
            Finished24h = _states.GetValueOrDefault(task.Task) ?? new Dictionary<string, long>(),
            CacheHits24h = _cacheHits.GetValueOrDefault(task.Task),
        };
    }

    private void Add(string task, string state, DateTimeOffset start, Bucket bucket, long cacheHits)
    {
        if (!_buckets.TryGetValue(task, out var buckets))
        {
            _buckets[task] = buckets = [];
        }

        buckets[start] = buckets.TryGetValue(start, out var other) ? other.Plus(bucket) : bucket;
        if (!_states.TryGetValue(task, out var states))
        {
            _states[task] = states = new Dictionary<string, long>(StringComparer.Ordinal);
        }

        states[state] = states.GetValueOrDefault(state) + bucket.Finished;
        _cacheHits[task] = _cacheHits.GetValueOrDefault(task) + cacheHits;
    }

    private readonly record struct Bucket(long Finished, long Succeeded, double? LatencySeconds, long InputTokens, long OutputTokens, decimal? Cost)
    {
        public Bucket Plus(Bucket other) => new(
            Finished + other.Finished, Succeeded + other.Succeeded, LatencySeconds ?? other.LatencySeconds,
            InputTokens + other.InputTokens, OutputTokens + other.OutputTokens, Cost is null && other.Cost is null ? null : (Cost ?? 0) + (other.Cost ?? 0));
    }

    /// <summary>The earlier days of the week for one data source, read again every <see cref="PastDaysFor"/> (two refreshes at once may both read them: harmless).</summary>
    private sealed class PastDays
    {
        private Snapshot? _last;

        public async Task<Dictionary<string, List<ConsoleDay>>> ReadAsync(NpgsqlConnection connection, DateOnly today, CancellationToken cancellationToken)
        {
            if (Volatile.Read(ref _last) is { } last && last.Today == today && DateTimeOffset.UtcNow - last.ReadAt < PastDaysFor)
            {
                return last.Days;
            }

            var midnight = new DateTimeOffset(today.ToDateTime(TimeOnly.MinValue), TimeSpan.Zero);
            await using var command = new NpgsqlCommand(PastDaysSql, connection);
            command.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = midnight.AddDays(-(ConsoleQueries.Days - 1)) });
            command.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = midnight });
            var days = new Dictionary<string, List<ConsoleDay>>(StringComparer.Ordinal);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var task = reader.GetString(0);
                if (!days.TryGetValue(task, out var list))
                {
                    days[task] = list = [];
                }

                list.Add(new ConsoleDay(reader.GetFieldValue<DateOnly>(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4), reader.IsDBNull(5) ? null : reader.GetDecimal(5)));
            }

            Volatile.Write(ref _last, new Snapshot(today, DateTimeOffset.UtcNow, days));
            return days;
        }

        private sealed record Snapshot(DateOnly Today, DateTimeOffset ReadAt, Dictionary<string, List<ConsoleDay>> Days);
    }
}
