using System.Diagnostics;
using Npgsql;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Governor;

/// <summary>
/// Watches a drain by worker processes through an endpoint outage: the outage's own clock, the workers (each must
/// stay alive) and, every ~100 ms while the test waits for a condition or for the outage's time to pass, the
/// queue's invariants. From the outage's start: no job that was pending then is answered, none is dead-lettered.
/// From the breaker's opening: the endpoint stays open, at most one job (the probe) is running, and no job's
/// attempt grows (a probe's counts while it runs and is given back after it).
/// Also keeps the peak number of database connections of each worker (by its application name).
/// </summary>
internal sealed class OutageWatch(NpgsqlDataSource db, IReadOnlyList<WorkerProcess> workers)
{
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(100);

    private const string InvariantsSql = """
        SELECT ARRAY[
            count(*) FILTER (WHERE j.state = 'failed'),
            count(*) FILTER (WHERE j.state = 'succeeded' AND d.state = 'pending'),
            count(*) FILTER (WHERE j.state = 'running'),
            count(*) FILTER (WHERE j.attempt > o.attempt + CASE WHEN j.state = 'running' THEN 1 ELSE 0 END),
            (SELECT count(*) FROM llm.endpoint_state WHERE endpoint = 'default' AND state = 'open')]
          FROM llm.job AS j JOIN outage_down AS d ON d.id = j.id LEFT JOIN outage_open AS o ON o.id = j.id
        """;

    private readonly Dictionary<string, long> _peakConnections = [];
    private bool _started;
    private bool _ended;
    private bool _opened;
    private int _checks;

    /// <summary>Time since the outage began.</summary>
    public Stopwatch Clock { get; } = new();

    /// <summary>How often the invariants were checked.</summary>
    public int Checks => _checks;

    /// <summary>The most connections each worker held at once, as sampled, before, during and after the outage (key: worker and phase).</summary>
    public IReadOnlyDictionary<string, long> PeakConnections => _peakConnections;

    /// <summary>Starts the outage's clock, runs <paramref name="outage"/>, then records which jobs were pending.</summary>
    public async Task BeginAsync(Func<Task> outage)
    {
        Clock.Restart();
        await outage();
        await db.ExecAsync("CREATE TABLE outage_down AS SELECT id, state FROM llm.job; CREATE TABLE outage_open (id bigint PRIMARY KEY, attempt integer NOT NULL)");
        _started = true;
    }

    /// <summary>The breaker is open and the calls of before have settled: records every job's attempt, which must not grow.</summary>
    public async Task OpenedAsync()
    {
        await db.ExecAsync("INSERT INTO outage_open SELECT id, attempt FROM llm.job");
        _opened = true;
    }

    /// <summary>The outage is over: from now on only the workers are watched.</summary>
    public void End()
    {
        _started = false;
        _ended = true;
        _opened = false;
    }

    /// <summary>
    /// Checks every <paramref name="tick"/> (100 ms by default) until <paramref name="condition"/> holds; fails once
    /// <paramref name="bound"/> passed on the outage's clock during the outage, since the call otherwise.
    /// </summary>
    public async Task<TimeSpan> UntilAsync(Func<Task<bool>> condition, TimeSpan bound, string what, TimeSpan? tick = null)
    {
        var since = Stopwatch.StartNew();
        for (var round = 0; ; round++)
        {
            await CheckAsync();
            if (await condition())
            {
                return since.Elapsed;
            }

            var elapsed = _started ? Clock.Elapsed : since.Elapsed;
            Assert.True(elapsed < bound, $"{what}: not within {bound.TotalSeconds:0} s (check {round}): " + Output());
            await Task.Delay(tick ?? Tick);
        }
    }

    /// <summary>Checks every ~100 ms until the outage's clock reads <paramref name="at"/>: the outage lasting its time is the scenario.</summary>
    public async Task HoldUntilAsync(TimeSpan at)
    {
        while (Clock.Elapsed < at)
        {
            await CheckAsync();
            await Task.Delay(TimeSpan.FromTicks(Math.Clamp((at - Clock.Elapsed).Ticks, 0, Tick.Ticks)));
        }
    }

    /// <summary>The workers' output, for a failing assertion's message.</summary>
    public string Output() => string.Join(" | ", workers.Select(w => $"{w.Id}: {w.Output}"));

    private async Task CheckAsync()
    {
        foreach (var worker in workers)
        {
            Assert.False(worker.Process.HasExited, $"worker {worker.Id} exited: {worker.Output}");
        }

        await SampleConnectionsAsync();
        if (!_started)
        {
            return;
        }

        _checks++;
        var at = $"at {Clock.Elapsed.TotalSeconds:0.0} s of the outage";
        var found = await db.ScalarAsync<long[]>(InvariantsSql);
        Assert.True(found[0] == 0, $"{found[0]} jobs dead-lettered {at}");
        Assert.True(found[1] == 0, $"{found[1]} jobs pending when the outage began were answered {at}");
        if (_opened)
        {
            Assert.True(found[2] <= 1, $"{found[2]} jobs running with the breaker open {at} (one probe at a time)");
            Assert.True(found[3] == 0, $"{found[3]} jobs spent an attempt with the breaker open {at}");
            Assert.True(found[4] == 1, $"the endpoint is not open {at}");
        }
    }

    private async Task SampleConnectionsAsync()
    {
        await using var command = db.CreateCommand(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'outage-worker-%' GROUP BY application_name");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            var name = $"{reader.GetString(0)} {(_ended ? "after" : _started ? "during" : "before")}";
            _peakConnections[name] = Math.Max(reader.GetInt64(1), _peakConnections.GetValueOrDefault(name));
        }
    }
}
