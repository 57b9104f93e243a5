using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;

namespace PgLlm.Benchmarks;

/// <summary>Runs every measurement against one throwaway PostgreSQL and one local model endpoint.</summary>
internal sealed partial class Suite
{
    private const string WarmUpPrefix = "warm-up ";

    private readonly SuiteSettings _settings;
    private readonly LocalPostgres _postgres;
    private readonly LocalModelServer _model;
    private readonly NpgsqlDataSource _db;
    private readonly JsonObject _results = new();
    private readonly ConcurrentDictionary<string, long> _arrivals = new(StringComparer.Ordinal);

    private Suite(SuiteSettings settings, LocalPostgres postgres, LocalModelServer model, NpgsqlDataSource db)
    {
        _settings = settings;
        _postgres = postgres;
        _model = model;
        _db = db;
    }

    private static readonly WorkerSettings FastModelWorker = new(Concurrency: 64, BatchSize: 64);

    private static readonly WorkerSettings SlowModelWorker = new(Concurrency: 128, BatchSize: 64);

    /// <summary>A slow model with 1,000 calls in flight in one worker process.</summary>
    private static readonly WorkerSettings WideWorker = new(Concurrency: 1_000, BatchSize: 64);

    /// <summary>The scaling measurement's one worker, and each of its four workers: the same concurrency in all.</summary>
    private static readonly WorkerSettings ScalingSingleWorker = new(Concurrency: 128, BatchSize: 64);

    private static readonly WorkerSettings ScalingQuarterWorker = new(Concurrency: 32, BatchSize: 32);

    private const int ScalingProcesses = 4;

    private static readonly TaskCompletionSource<int> Interruption = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Set when a signal interrupted the run; completes with the exit code once PostgreSQL is stopped.</summary>
    public static Task<int>? Interrupted { get; private set; }

    private static void StopOnSignal(PosixSignalContext context, LocalPostgres postgres, int exitCode)
    {
        // Keep the process alive until the server is stopped; the run then fails and Main returns the code.
        context.Cancel = true;
        if (Interrupted is not null)
        {
            return;
        }

        Interrupted = Interruption.Task;
        Console.Error.WriteLine("interrupted: stopping the benchmark's PostgreSQL; no results are written");
        try
        {
            postgres.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        finally
        {
            Interruption.TrySetResult(exitCode);
        }
    }

    public static async Task<int> RunAsync(SuiteSettings settings)
    {
        var started = Stopwatch.StartNew();
        var postgresOptions = new LocalPostgresOptions { SharedPreloadLibraries = "pg_stat_statements" };
        postgresOptions.Settings["shared_buffers"] = "256MB";
        postgresOptions.Settings["pg_stat_statements.track"] = "all";
        await using var postgres = await LocalPostgres.StartAsync(postgresOptions);
        // Interrupted (Ctrl+C, SIGTERM): stop the throwaway server before the process ends, so no
        // PostgreSQL is left running. The worker process stops by itself when its input closes.
        using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => StopOnSignal(c, postgres, 130));
        using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => StopOnSignal(c, postgres, 143));
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { RecordRequests = false, InlineScheduling = true });
        await using var db = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(await postgres.CreateDatabaseAsync("bench"))
        {
            MaxPoolSize = 64,
        }.ConnectionString);
        await MigrateAsync(db);
        await db.ExecuteAsync("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");

        var suite = new Suite(settings, postgres, model, db);
        model.Responder = suite.Answer;
        Console.WriteLine($"PgLlm benchmarks ({(settings.Quick ? "quick" : "full")}): PostgreSQL {await db.ScalarAsync<string>("SHOW server_version")}, " +
                          $"{Environment.ProcessorCount} cores, .NET {Environment.Version}");
        await suite.RunAllAsync();
        suite._results["elapsed_s"] = Math.Round(started.Elapsed.TotalSeconds, 1);
        suite.Report();
        if (settings.PrintStatements)
        {
            await suite.PrintStatementsAsync();
        }

        return 0;
    }

    private async Task RunAllAsync()
    {
        _results["measured_at"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        _results["mode"] = _settings.Quick ? "quick" : "full";
        _results["machine"] = Machine();
        _results["load_average_at_start"] = LoadAverage();

        if (_settings.Runs("insert"))
        {
            await MeasureInsertsAsync(2, "insert_tps_plain", "insert_tps_trigger", "insert_ratio");
            await MeasureInsertsAsync(8, "insert_tps_plain_8_clients", "insert_tps_trigger_8_clients", "insert_ratio_8_clients");
        }

        if (_settings.Runs("trigger"))
        {
            await MeasureTriggerCostAsync();
        }

        if (_settings.Runs("drain_0ms"))
        {
            await MeasureDrainAsync(TimeSpan.Zero, _settings.DrainJobs, _settings.DrainRepeats, FastModelWorker, "drain_jobs_per_s_0ms", null);
        }

        if (_settings.Runs("drain_200ms"))
        {
            await MeasureDrainAsync(TimeSpan.FromMilliseconds(200), _settings.SlowDrainJobs, _settings.SlowDrainRepeats, SlowModelWorker, "drain_jobs_per_s_200ms", "drain_efficiency_200ms");
        }

        if (_settings.Runs("drain_2s_1000"))
        {
            await MeasureWideDrainAsync();
        }

        if (_settings.Runs("scaling"))
        {
            await MeasureScalingAsync();
        }

        if (_settings.Runs("pickup"))
        {
            await MeasurePickupAsync();
        }

        if (_settings.Runs("rerun_pickup"))
        {
            await MeasurePickupDuringRerunAsync();
        }

        if (_settings.Runs("update"))
        {
            await MeasureUserUpdatesAsync();
        }

        if (_settings.Runs("rss"))
        {
            await MeasurePeakRssAsync();
        }

        if (_settings.Runs("backfill"))
        {
            await MeasureBackfillAsync();
        }

        if (_settings.Runs("batch_backfill"))
        {
            await MeasureBatchBackfillAsync();
        }

        if (_settings.Runs("console"))
        {
            await MeasureConsoleOverviewAsync();
        }

        _results["load_average_at_end"] = LoadAverage();
    }

    // ---------------------------------------------------------------------------------------------
    // Write overhead
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Single-row autocommit inserts by <paramref name="clients"/> connections into the plain table and
    /// the trigger table, in alternating short windows (plain-trigger, trigger-plain, ...:
    /// <see cref="SuiteSettings.InsertPairs"/> pairs) after one reset; the ratio is the median of the
    /// pairs'. Side by side and short, as for the user updates: every insert waits for its WAL flush,
    /// and this machine's flush rate drifts by a third within seconds, so 5-second runs one after the
    /// other (the earlier method) moved the ratio by 0.1 from run to run on the same code.
    /// </summary>
    private async Task MeasureInsertsAsync(int clients, string plainKey, string triggerKey, string ratioKey)
    {
        await ResetAsync();
        var connections = new List<NpgsqlConnection>();
        var plainInserts = new List<(NpgsqlCommand Insert, NpgsqlParameter<string> Body)>();
        var triggerInserts = new List<(NpgsqlCommand Insert, NpgsqlParameter<string> Body)>();
        try
        {
            for (var client = 0; client < clients; client++)
            {
                var connection = await _db.OpenConnectionAsync();
                connections.Add(connection);
                plainInserts.Add(await PrepareInsertAsync(connection, "public.bench_plain"));
                triggerInserts.Add(await PrepareInsertAsync(connection, "public.bench_items"));
            }

            var (plain, trigger, ratios) = await Stats.AlternatingPairsAsync(
                _settings.InsertPairs, () => InsertRateAsync(plainInserts), () => InsertRateAsync(triggerInserts));
            for (var i = 0; i < ratios.Count; i++)
            {
                Progress($"inserts, {clients} clients, pair {i + 1}: plain {plain[i]:0} tps, trigger {trigger[i]:0} tps, ratio {ratios[i]:0.00}");
            }

            _results[plainKey] = Math.Round(Stats.Median(plain), 0);
            _results[triggerKey] = Math.Round(Stats.Median(trigger), 0);
            _results[ratioKey] = Math.Round(Stats.Median(ratios), 3);
        }
        finally
        {
            foreach (var (insert, _) in plainInserts.Concat(triggerInserts))
            {
                await insert.DisposeAsync();
            }

            foreach (var connection in connections)
            {
                await connection.DisposeAsync();
            }
        }
    }

    private static async Task<(NpgsqlCommand Insert, NpgsqlParameter<string> Body)> PrepareInsertAsync(NpgsqlConnection connection, string table)
    {
        var insert = new NpgsqlCommand($"INSERT INTO {table} (body) VALUES ($1)", connection);
        var body = new NpgsqlParameter<string> { TypedValue = "" };
        insert.Parameters.Add(body);
        await insert.PrepareAsync();
        return (insert, body);
    }

    /// <summary>Inserts per second over one window, each connection inserting one row at a time with its prepared command.</summary>
    private async Task<double> InsertRateAsync(List<(NpgsqlCommand Insert, NpgsqlParameter<string> Body)> clients)
    {
        var duration = TimeSpan.FromSeconds(_settings.InsertSeconds);
        using var start = new SemaphoreSlim(0, clients.Count);
        var counts = new long[clients.Count];
        var stopAt = 0L;
        var tasks = clients.Select(async (client, index) =>
        {
            await start.WaitAsync();
            var n = 0L;
            while (Stopwatch.GetTimestamp() < Volatile.Read(ref stopAt))
            {
                client.Body.TypedValue = "item " + index.ToString(CultureInfo.InvariantCulture) + "-" + n.ToString(CultureInfo.InvariantCulture);
                await client.Insert.ExecuteNonQueryAsync();
                n++;
            }

            counts[index] = n;
        }).ToArray();

        var clock = Stopwatch.StartNew();
        Volatile.Write(ref stopAt, Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency));
        start.Release(clients.Count);
        await Task.WhenAll(tasks);
        return counts.Sum() / clock.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// The trigger's own cost per row: a multi-row INSERT into the trigger table minus the same INSERT
    /// into the plain table, per row, each rolled back; with an empty queue and with a backlog of pending
    /// jobs. The backlog lives in a second database of the same server (same schema, same migrations),
    /// so that the two are measured in alternation, moment by moment (empty-backlog, backlog-empty, ...),
    /// and the ratio is the median of the pairs'. Measured one after the other, seconds apart, the
    /// machine's drift moved the ratio between 0.92 and 1.16 on the same code.
    /// </summary>
    private async Task MeasureTriggerCostAsync()
    {
        await ResetAsync();
        await using var backlogDb = NpgsqlDataSource.Create(await _postgres.CreateDatabaseAsync("bench_backlog"));
        await MigrateAsync(backlogDb);
        await backlogDb.ExecuteAsync($"INSERT INTO public.bench_items (body) SELECT 'backlog ' || g FROM generate_series(1, {_settings.Backlog}) AS g");
        await backlogDb.ExecuteAsync("VACUUM ANALYZE llm.job");
        await backlogDb.ExecuteAsync("CHECKPOINT");
        var pending = await backlogDb.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'");

        await using var emptyConnection = await _db.OpenConnectionAsync();
        await using var backlogConnection = await backlogDb.OpenConnectionAsync();
        // A first round of each, not counted: plans and caches.
        await TriggerCostAsync(emptyConnection, []);
        await TriggerCostAsync(backlogConnection, []);
        var checkpointsBefore = await CheckpointsAsync();
        var (emptyInserts, backlogInserts) = (new List<(double Plain, double Trigger)>(), new List<(double Plain, double Trigger)>());
        var (empty, backlog, ratios) = await Stats.AlternatingPairsAsync(
            _settings.TriggerPairs, () => TriggerCostAsync(emptyConnection, emptyInserts), () => TriggerCostAsync(backlogConnection, backlogInserts));

        // Each pair in time order with both sides' inserts (plain/trigger, ms), so that a run of slow
        // pairs shows which insert of which side changed, and whether a checkpoint ran meanwhile.
        Progress($"trigger cost, empty queue: {Stats.Median(empty):0.0000} ms/row; {pending} pending jobs: {Stats.Median(backlog):0.0000} ms/row; " +
                 $"checkpoints during the pairs: {(checkpointsBefore < 0 ? "not counted" : (await CheckpointsAsync() - checkpointsBefore).ToString(CultureInfo.InvariantCulture))}; " +
                 $"autovacuum since the start, empty queue: {await AutovacuumAsync(_db)}; backlog: {await AutovacuumAsync(backlogDb)}");
        for (var i = 0; i < ratios.Count; i++)
        {
            Progress(string.Create(CultureInfo.InvariantCulture,
                $"  trigger pair {i + 1}: ratio {ratios[i]:0.00}; empty queue {emptyInserts[i].Plain:0.0}/{emptyInserts[i].Trigger:0.0} ms, backlog {backlogInserts[i].Plain:0.0}/{backlogInserts[i].Trigger:0.0} ms (plain/trigger insert)"));
        }
        _results["trigger_ms_empty"] = Math.Round(Stats.Median(empty), 4);
        _results["trigger_ms_backlog"] = Math.Round(Stats.Median(backlog), 4);
        _results["trigger_backlog_jobs"] = pending;
        _results["backlog_cost_ratio"] = Math.Round(Stats.Median(ratios), 3);

        // Its rolled-back rows would otherwise be vacuumed during a later measurement.
        await backlogConnection.CloseAsync();
        await backlogDb.DisposeAsync();
        await _db.ExecuteAsync("DROP DATABASE bench_backlog WITH (FORCE)");
    }

    /// <summary>The autovacuum and autoanalyze runs on the trigger measurement's tables, and their dead rows now.</summary>
    private static Task<string> AutovacuumAsync(NpgsqlDataSource db) => db.ScalarAsync<string>(
        "SELECT string_agg(format('%s %s vacuums, %s analyzes, %s dead', relname, autovacuum_count, autoanalyze_count, n_dead_tup), '; ' ORDER BY relname) " +
        "FROM pg_stat_user_tables WHERE (schemaname, relname) IN (('llm', 'job'), ('public', 'bench_items'), ('public', 'bench_plain'))");

    /// <summary>The server's checkpoints so far, timed and requested; -1 where <c>pg_stat_bgwriter</c> no longer counts them (PostgreSQL 17).</summary>
    private Task<long> CheckpointsAsync() => _db.ScalarAsync<long>(
        "SELECT coalesce((SELECT (to_jsonb(b) ->> 'checkpoints_timed')::bigint + (to_jsonb(b) ->> 'checkpoints_req')::bigint FROM pg_catalog.pg_stat_bgwriter AS b), -1)");

    /// <summary>
    /// The trigger's cost per row, in ms: the same rolled-back multi-row insert into both tables, the
    /// plain table's time subtracted; both inserts' times are added to <paramref name="inserts"/>.
    /// </summary>
    private async Task<double> TriggerCostAsync(NpgsqlConnection connection, List<(double Plain, double Trigger)> inserts)
    {
        var rows = _settings.TriggerRows;
        var plain = await TimedRolledBackInsertAsync(connection, "public.bench_plain", rows);
        var trigger = await TimedRolledBackInsertAsync(connection, "public.bench_items", rows);
        inserts.Add((plain, trigger));
        return (trigger - plain) / rows;
    }

    private static async Task<double> TimedRolledBackInsertAsync(NpgsqlConnection connection, string table, int rows)
    {
        await using var transaction = await connection.BeginTransactionAsync();
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO {table} (body) SELECT 'cost ' || g FROM generate_series(1, {rows}) AS g", connection, transaction);
        var clock = Stopwatch.StartNew();
        await insert.ExecuteNonQueryAsync();
        var elapsed = clock.Elapsed.TotalMilliseconds;
        await transaction.RollbackAsync();
        return elapsed;
    }

    // ---------------------------------------------------------------------------------------------
    // Drain
    // ---------------------------------------------------------------------------------------------

    private sealed record DrainRun(long Succeeded, long Other, double Seconds, double PeakRssMb, double WarmRssMb, long Calls, long RepeatedAttempts)
    {
        public double JobsPerSecond => Succeeded / Seconds;

        /// <summary>Model calls beyond one per job: each is a call made twice for the same job (0 when every job succeeded once).</summary>
        public long RepeatedCalls => Calls - Succeeded - Other;
    }

    private async Task MeasureDrainAsync(TimeSpan latency, int jobs, int repeats, WorkerSettings worker, string rateKey, string? efficiencyKey)
    {
        var rates = new List<double>();
        for (var repeat = 0; repeat < repeats; repeat++)
        {
            var run = await DrainAsync(latency, jobs, worker);
            rates.Add(run.JobsPerSecond);
            Progress($"drain, {latency.TotalMilliseconds:0} ms model, concurrency {worker.Concurrency}: {run.Succeeded} jobs in {run.Seconds:0.00} s = {run.JobsPerSecond:0} jobs/s" +
                     (run.Other > 0 ? $" ({run.Other} jobs did not succeed)" : string.Empty));
        }

        var rate = Stats.Median(rates);
        _results[rateKey] = Math.Round(rate, 0);
        _results[rateKey + "_jobs"] = jobs;
        _results[rateKey + "_worker"] = $"concurrency {worker.Concurrency}, batch size {worker.BatchSize}";
        if (efficiencyKey is not null)
        {
            _results[efficiencyKey] = Math.Round(rate / (worker.Concurrency / latency.TotalSeconds), 3);
        }
    }

    /// <summary>
    /// Starts <paramref name="processes"/> worker processes against the one database, warms them up, then
    /// commits <paramref name="jobs"/> rows in one statement and waits until every job is settled. The rate
    /// is the database's own clock: jobs succeeded divided by the time from the first claim to the last
    /// write-back. The endpoint's request count over the drain says whether any job was called twice.
    /// </summary>
    private async Task<DrainRun> DrainAsync(TimeSpan latency, int jobs, WorkerSettings worker, int processes = 1)
    {
        await ResetAsync();
        _model.Latency = TimeSpan.Zero;
        var children = new List<WorkerChild>();
        try
        {
            for (var i = 0; i < processes; i++)
            {
                children.Add(WorkerChild.Start(_db.ConnectionString, _model.BaseUrl, _model.ApiKey, worker));
            }

            await WarmUpAsync();
            var warmRss = children.Max(c => c.CurrentRssMb());
            _model.Latency = latency;
            var firstJob = await _db.ScalarAsync<long>("SELECT coalesce(max(id), 0) FROM llm.job");
            var callsBefore = _model.RequestCount;
            await _db.ExecuteAsync($"INSERT INTO public.bench_items (body) SELECT 'item ' || g FROM generate_series(1, {jobs}) AS g");
            var endpointCpu = Process.GetCurrentProcess().TotalProcessorTime;
            var idealSeconds = jobs * Math.Max(latency.TotalSeconds, 0.002) / (worker.Concurrency * processes);
            await WaitUntilSettledAsync(firstJob, TimeSpan.FromSeconds(60 + (idealSeconds * 4) + (jobs * 0.002)));
            endpointCpu = Process.GetCurrentProcess().TotalProcessorTime - endpointCpu;
            var calls = _model.RequestCount - callsBefore;
            var peak = 0.0;
            foreach (var child in children)
            {
                peak = Math.Max(peak, await child.StopAsync());
            }

            Progress($"  CPU: worker process{(processes > 1 ? "es" : string.Empty)} {children.Sum(c => c.CpuMilliseconds) * 1000 / (jobs + 520):0} us/job (whole life, incl. warm-up), " +
                     $"benchmark process (model endpoint, polling) {endpointCpu.TotalMilliseconds * 1000 / jobs:0} us/job; " +
                     $"worker context switches {(double)children.Sum(c => c.ContextSwitches) / (jobs + 520):0.00}/job (whole life)");
            _model.Latency = TimeSpan.Zero;
            return await SettledRunAsync(firstJob, peak, warmRss, calls);
        }
        finally
        {
            foreach (var child in children)
            {
                await child.DisposeAsync();
            }
        }
    }

    /// <summary>The drain's jobs once settled: how many succeeded, over what time, and whether any was attempted twice.</summary>
    private async Task<DrainRun> SettledRunAsync(long firstJob, double peakRssMb, double warmRssMb, long calls)
    {
        // Where a job's time goes: from its claim to its write-back (the model call plus the worker's own
        // overhead around it); the rest of the drain is the gaps between one job's end and the next claim.
        var inJob = await _db.ScalarAsync<double[]>(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - attempted_at) * 1000)::float8[] " +
            $"FROM llm.job WHERE id > {firstJob} AND state = 'succeeded'");
        Progress($"  claim to write-back per job: p50 {inJob[0]:0.0} ms, p99 {inJob[1]:0.0} ms");
        await using var command = _db.CreateCommand(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state <> 'succeeded'), " +
            "extract(epoch FROM max(finished_at) - min(attempted_at))::float8, count(*) FILTER (WHERE attempt > 1) FROM llm.job WHERE id > $1");
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = firstJob });
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new DrainRun(reader.GetInt64(0), reader.GetInt64(1), reader.GetDouble(2), peakRssMb, warmRssMb, calls, reader.GetInt64(3));
    }

    /// <summary>
    /// A model that takes 2 s per answer and one worker process with 1,000 calls in flight: the efficiency
    /// (jobs/s over the ideal 1,000 / 2 s) and the process's peak resident memory (as worker_peak_rss_mb).
    /// </summary>
    private async Task MeasureWideDrainAsync()
    {
        var latency = TimeSpan.FromSeconds(2);
        var clock = Stopwatch.StartNew();
        var run = await DrainAsync(latency, _settings.WideDrainJobs, WideWorker);
        var efficiency = run.JobsPerSecond / (WideWorker.Concurrency / latency.TotalSeconds);
        Progress($"drain, 2 s model, concurrency {WideWorker.Concurrency}: {run.Succeeded} jobs in {run.Seconds:0.00} s = {run.JobsPerSecond:0} jobs/s, " +
                 $"efficiency {efficiency:0.000}; worker peak RSS {run.PeakRssMb:0.0} MB (after warm-up {run.WarmRssMb:0.0} MB); " +
                 $"{run.Calls} model calls; the measurement took {clock.Elapsed.TotalSeconds:0} s" +
                 (run.Other > 0 ? $" ({run.Other} jobs did not succeed)" : string.Empty));
        _results["drain_jobs_per_s_2s_1000"] = Math.Round(run.JobsPerSecond, 0);
        _results["drain_efficiency_2s_1000"] = Math.Round(efficiency, 3);
        _results["drain_2s_1000_jobs"] = _settings.WideDrainJobs;
        _results["drain_2s_1000_worker"] = $"concurrency {WideWorker.Concurrency}, batch size {WideWorker.BatchSize}";
        _results["worker_peak_rss_mb_1000"] = Math.Round(run.PeakRssMb, 1);
    }

    /// <summary>
    /// Four worker processes against the one database (a 50 ms model), against one worker with the same
    /// total concurrency: the ratio of their rates says whether the workers' claims fight each other. The
    /// endpoint's request count and the jobs' attempt counts say whether any job was called twice.
    /// </summary>
    private async Task MeasureScalingAsync()
    {
        var latency = TimeSpan.FromMilliseconds(50);
        var jobs = _settings.ScalingJobs;
        var clock = Stopwatch.StartNew();
        var single = await DrainAsync(latency, jobs, ScalingSingleWorker);
        Progress($"drain, 50 ms model, 1 worker, concurrency {ScalingSingleWorker.Concurrency}: {single.Succeeded} jobs in {single.Seconds:0.00} s = {single.JobsPerSecond:0} jobs/s");
        var four = await DrainAsync(latency, jobs, ScalingQuarterWorker, ScalingProcesses);
        var ratio = four.JobsPerSecond / single.JobsPerSecond;
        Progress($"drain, 50 ms model, {ScalingProcesses} workers, concurrency {ScalingQuarterWorker.Concurrency} each: {four.Succeeded} jobs in {four.Seconds:0.00} s = {four.JobsPerSecond:0} jobs/s, " +
                 $"ratio {ratio:0.000}; {four.Calls} model calls for {four.Succeeded + four.Other} jobs, {four.RepeatedAttempts} jobs attempted more than once" +
                 (four.Other > 0 ? $", {four.Other} jobs did not succeed" : string.Empty) + $"; the measurement took {clock.Elapsed.TotalSeconds:0} s");
        _results["drain_scaling_jobs"] = jobs;
        _results["drain_scaling_1_worker_jobs_per_s"] = Math.Round(single.JobsPerSecond, 0);
        _results["drain_scaling_1_worker"] = $"concurrency {ScalingSingleWorker.Concurrency}, batch size {ScalingSingleWorker.BatchSize}";
        _results["drain_scaling_4_workers_jobs_per_s"] = Math.Round(four.JobsPerSecond, 0);
        _results["drain_scaling_4_workers_each"] = $"concurrency {ScalingQuarterWorker.Concurrency}, batch size {ScalingQuarterWorker.BatchSize}";
        _results["drain_scaling_4_workers"] = Math.Round(ratio, 3);
        _results["drain_scaling_4_workers_repeated_calls"] = four.RepeatedCalls;
        _results["drain_scaling_4_workers_repeated_attempts"] = four.RepeatedAttempts;
    }

    /// <summary>Waits until no job after <paramref name="afterJob"/> is pending (only those due, with <paramref name="onlyDue"/>) or running.</summary>
    private async Task WaitUntilSettledAsync(long afterJob, TimeSpan timeout, bool onlyDue = false)
    {
        var clock = Stopwatch.StartNew();
        // Answered by the partial indexes on pending and running jobs, so polling stays cheap.
        while (await _db.ScalarAsync<bool>(
                   $"SELECT EXISTS (SELECT 1 FROM llm.job WHERE state = 'pending' AND id > {afterJob}{(onlyDue ? " AND scheduled_at <= now()" : string.Empty)}) " +
                   $"OR EXISTS (SELECT 1 FROM llm.job WHERE state = 'running' AND id > {afterJob})"))
        {
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"the queue did not drain within {timeout.TotalSeconds:0} s");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>A few hundred jobs through the fresh worker process, so JIT and connection set-up are not measured.</summary>
    private async Task WarmUpAsync()
    {
        var before = await _db.ScalarAsync<long>("SELECT coalesce(max(id), 0) FROM llm.job");
        await _db.ExecuteAsync($"INSERT INTO public.bench_items (body) SELECT '{WarmUpPrefix}' || g FROM generate_series(1, 500) AS g");
        await WaitUntilSettledAsync(before, TimeSpan.FromSeconds(60));
        for (var i = 0; i < 20; i++)
        {
            await _db.ExecuteAsync($"INSERT INTO public.bench_items (body) VALUES ('{WarmUpPrefix}single {i}')");
            await Task.Delay(10);
        }

        await WaitUntilSettledAsync(before, TimeSpan.FromSeconds(60));
        await Task.Delay(300);
    }

    // ---------------------------------------------------------------------------------------------
    // Pickup latency
    // ---------------------------------------------------------------------------------------------

    /// <summary>From a user's commit returning to the model request arriving at the endpoint, with an idle worker.</summary>
    private async Task MeasurePickupAsync()
    {
        await ResetAsync();
        await using var child = WorkerChild.Start(_db.ConnectionString, _model.BaseUrl, _model.ApiKey, FastModelWorker);
        await WarmUpAsync();
        var (latencies, missing) = await PickupLatenciesAsync();
        await child.StopAsync();
        Progress($"pickup: p50 {Stats.Percentile(latencies, 50):0.00} ms, p99 {Stats.Percentile(latencies, 99):0.00} ms, max {latencies.DefaultIfEmpty().Max():0.00} ms over {latencies.Count} jobs" +
                 (missing > 0 ? $", {missing} never arrived" : string.Empty));
        _results["pickup_ms_p50"] = Math.Round(Stats.Percentile(latencies, 50), 3);
        _results["pickup_ms_p99"] = Math.Round(Stats.Percentile(latencies, 99), 3);
        _results["pickup_jobs"] = latencies.Count;
    }

    /// <summary>
    /// <see cref="SuiteSettings.PickupJobs"/> single-row inserts 20 ms apart into the task's table, each timed from its
    /// commit returning to its model request arriving at the endpoint; the latencies (ms) and how many never arrived
    /// within 30 s.
    /// </summary>
    private async Task<(List<double> Latencies, int Missing)> PickupLatenciesAsync()
    {
        _arrivals.Clear();
        var committed = new Dictionary<string, long>(StringComparer.Ordinal);
        await using (var connection = await _db.OpenConnectionAsync())
        {
            await using var insert = new NpgsqlCommand("INSERT INTO public.bench_items (body) VALUES ($1)", connection);
            var body = new NpgsqlParameter<string> { TypedValue = "" };
            insert.Parameters.Add(body);
            await insert.PrepareAsync();
            for (var i = 0; i < _settings.PickupJobs; i++)
            {
                body.TypedValue = "pickup " + i.ToString(CultureInfo.InvariantCulture);
                await insert.ExecuteNonQueryAsync();
                committed[body.TypedValue] = Stopwatch.GetTimestamp();
                await Task.Delay(20);
            }
        }

        var clock = Stopwatch.StartNew();
        while (committed.Keys.Any(k => !_arrivals.ContainsKey(k)) && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(50);
        }

        var latencies = committed
            .Where(c => _arrivals.ContainsKey(c.Key))
            .Select(c => Stopwatch.GetElapsedTime(c.Value, _arrivals[c.Key]).TotalMilliseconds)
            .ToList();
        return (latencies, committed.Count - latencies.Count);
    }

    /// <summary>The endpoint's answer; records when each request arrived, by the item text the prompt ends with.</summary>
    private ModelReply Answer(ModelRequest request)
    {
        var arrived = Stopwatch.GetTimestamp();
        var text = request.LastUserText;
        var at = text.LastIndexOf("Text: ", StringComparison.Ordinal);
        if (at >= 0 && text.AsSpan(at + 6).StartsWith("pickup ", StringComparison.Ordinal))
        {
            _arrivals.TryAdd(text[(at + 6)..], arrived);
        }

        return ModelReply.Json(DeterministicModel.Answer(request));
    }

    // ---------------------------------------------------------------------------------------------
    // User updates while the worker drains
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Two clients (a process of their own) update random rows of the task's table (a column no task
    /// reads) while the worker is idle and while it drains jobs of those same rows, in alternating
    /// windows. Measured twice: with the 200 ms model of the drain_200ms setup (the worker at full speed
    /// against a model that answers as fast as real ones at best: <c>user_update_ratio</c>), and with an
    /// instant model, where the drain takes every core it can get (<c>user_update_ratio_instant_model</c>,
    /// reported).
    /// </summary>
    private async Task MeasureUserUpdatesAsync()
    {
        var realistic = await UpdatesWhileDrainingAsync(TimeSpan.FromMilliseconds(200), SlowModelWorker);
        var instant = await UpdatesWhileDrainingAsync(TimeSpan.Zero, FastModelWorker);

        _results["user_update_tps_idle"] = Math.Round(realistic.Idle.Tps, 0);
        _results["user_update_tps_draining"] = Math.Round(realistic.Busy.Tps, 0);
        _results["user_update_ratio"] = Math.Round(realistic.Ratio, 3);
        _results["user_update_p50_us_idle"] = Math.Round(realistic.Idle.P50Us, 0);
        _results["user_update_p50_us_draining"] = Math.Round(realistic.Busy.P50Us, 0);
        _results["user_update_p99_us_idle"] = Math.Round(realistic.Idle.P99Us, 0);
        _results["user_update_p99_us_draining"] = Math.Round(realistic.Busy.P99Us, 0);
        _results["user_update_drain_jobs_per_s"] = Math.Round(realistic.DrainRate, 0);
        _results["user_update_ratio_instant_model"] = Math.Round(instant.Ratio, 3);
        _results["user_update_instant_model_drain_jobs_per_s"] = Math.Round(instant.DrainRate, 0);
        _results["user_deadlocks"] = realistic.Idle.Deadlocks + realistic.Busy.Deadlocks + instant.Idle.Deadlocks + instant.Busy.Deadlocks;
        _results["user_update_drain_covered"] = realistic.Covered && instant.Covered;
    }

    /// <summary>
    /// User updates with the worker idle and while it drains, in alternating short windows of one worker
    /// process (idle-busy, busy-idle, ...: <see cref="SuiteSettings.UpdateRepeats"/> pairs); the ratio is
    /// the median of the pairs'. Side by side and short, because this machine's commit rate drifts by a
    /// third within seconds (each update waits for its WAL flush, and the disk's flush time varies): with
    /// 5-second windows the pairs' ratios ranged from 0.5 to 1.3, with 1-second windows 0.75 to 1.05.
    /// Every row and its job is written before the worker starts, with the jobs scheduled a day ahead: a
    /// busy window makes a chunk of them due (more than the worker drains in the window, sized by
    /// <see cref="UpdateBacklog"/> from the drain rate: a first busy window, not counted, measures it), an
    /// idle window starts once nothing is due or running. So no window follows a bulk insert of its own,
    /// whose dirty pages would be written out during it.
    /// </summary>
    /// <returns>Idle and busy: the medians over the windows of each side (deadlocks summed).</returns>
    private async Task<(UpdateWindow Idle, UpdateWindow Busy, double Ratio, double DrainRate, bool Covered)> UpdatesWhileDrainingAsync(TimeSpan latency, WorkerSettings worker)
    {
        var windowSeconds = _settings.UpdateSeconds;
        var pairs = _settings.UpdateRepeats;
        // A busy window starts once the first answers are written back (the drain's steady state), one
        // model latency and a little after the chunk is due.
        var rampUp = latency * 1.5 + TimeSpan.FromMilliseconds(50);
        var backlog = new UpdateBacklog(ExpectedDrainRate(latency, worker), windowSeconds, rampUp.TotalSeconds);
        await ResetAsync();
        // The calibration window's chunk (twice the estimate), and what the counted windows drain: each makes a
        // chunk due and returns what is left of it, about half (Margin), with half as much again for a higher rate.
        await AddScheduledAheadAsync(backlog, (2L * backlog.Chunk) + (long)(0.75 * backlog.Chunk * pairs));
        await _db.ExecuteAsync("VACUUM ANALYZE public.bench_items, llm.job");
        await _db.ExecuteAsync("CHECKPOINT");
        var (lowId, highId) = await IdRangeAsync();

        _model.Latency = TimeSpan.Zero;
        await using var clients = UserClients.Start(_db.ConnectionString);
        await using var child = WorkerChild.Start(_db.ConnectionString, _model.BaseUrl, _model.ApiKey, worker);
        await WarmUpAsync();
        _model.Latency = latency;
        // The clients' first window opens their connections: not counted.
        await clients.RunAsync(lowId, highId, 0.2);
        var busyWindow = new BusyWindowRun(clients, lowId, highId, windowSeconds, rampUp, $"{latency.TotalMilliseconds:0} ms model, concurrency {worker.Concurrency}");
        var calibration = await BusyWindowAsync(busyWindow, backlog, 2 * backlog.Chunk, pairs + 1);
        Progress($"  calibration window (not counted): {calibration.Rate:0} jobs/s; busy windows make {backlog.Chunk} jobs due each");
        var (idles, busies, ratios) = (new List<UpdateWindow>(), new List<UpdateWindow>(), new List<double>());
        var (rates, uncovered) = (new List<double>(), 0);
        for (var pair = 0; pair < pairs; pair++)
        {
            UpdateWindow idle = null!, busy = null!;
            foreach (var isBusy in pair % 2 == 0 ? new[] { false, true } : [true, false])
            {
                if (!isBusy)
                {
                    idle = await IdleWindowAsync(clients, lowId, highId, windowSeconds);
                    continue;
                }

                var run = await BusyWindowAsync(busyWindow, backlog, backlog.Chunk, pairs - pair);
                (busy, uncovered) = (run.Window, uncovered + (run.Covered ? 0 : 1));
                rates.Add(run.Rate);
            }

            Progress($"  pair {pair + 1}: ratio {busy.Tps / idle.Tps:0.00}");
            idles.Add(idle);
            busies.Add(busy);
            ratios.Add(busy.Tps / idle.Tps);
        }

        Progress($"  the drain covered {pairs - uncovered} of {pairs} busy windows ({latency.TotalMilliseconds:0} ms model); the last chunk {backlog.Chunk} jobs, for up to {backlog.Rate:0} jobs/s");
        // The rest of the queue is not measured: the next reset truncates it.
        await child.StopAsync();
        _model.Latency = TimeSpan.Zero;
        return (MedianWindow(idles), MedianWindow(busies), Stats.Median(ratios), Stats.Median(rates), uncovered == 0);
    }

    /// <summary>The medians of the windows' rates and percentiles, their deadlocks summed.</summary>
    private static UpdateWindow MedianWindow(List<UpdateWindow> windows) => new(
        Stats.Median(windows.ConvertAll(w => w.Tps)),
        windows.Sum(w => w.Deadlocks),
        Stats.Median(windows.ConvertAll(w => w.P50Us)),
        Stats.Median(windows.ConvertAll(w => w.P90Us)),
        Stats.Median(windows.ConvertAll(w => w.P99Us)));

    /// <summary>
    /// The drain rate a busy window's chunk is first sized for: with a slow model its ideal rate (concurrency
    /// over latency); with an instant model the rate this run's drain_0ms measured, or this machine's usual
    /// rate (6,000 jobs/s) if higher. The calibration window then measures it.
    /// </summary>
    private double ExpectedDrainRate(TimeSpan latency, WorkerSettings worker) =>
        latency > TimeSpan.Zero ? worker.Concurrency / latency.TotalSeconds
        : Math.Max(6_000, _results["drain_jobs_per_s_0ms"] is JsonValue measured && measured.TryGetValue(out double rate) ? rate : 0);

    /// <summary>
    /// Rows whose jobs are scheduled a day ahead, in one transaction, so that a running worker never sees them
    /// due (no one else adds jobs meanwhile: the user updates write a column no task reads).
    /// </summary>
    /// <summary>
    /// The chunk's jobs still pending go back to the jobs scheduled ahead. This bulk update can meet the worker's
    /// claim on the same rows in a deadlock (the harness's statement, not PgLlm's): it is tried again, up to 5 times.
    /// </summary>
    private async Task<long> PostponeLeftoversAsync(long[] due)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await _db.ScalarAsync<long>(
                    "WITH r AS (UPDATE llm.job SET scheduled_at = now() + interval '1 day' " +
                    $"WHERE id BETWEEN {due[0]} AND {due[1]} AND state = 'pending' AND scheduled_at <= now() RETURNING 1) SELECT count(*) FROM r");
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.DeadlockDetected && attempt < 5)
            {
                Progress($"  the harness's postponing of leftovers met the worker in a deadlock; trying again ({attempt})");
            }
        }
    }

    private async Task AddScheduledAheadAsync(UpdateBacklog backlog, long rows)
    {
        var before = await _db.ScalarAsync<long>("SELECT coalesce(max(id), 0) FROM llm.job");
        await using var connection = await _db.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        foreach (var sql in new[]
                 {
                     $"INSERT INTO public.bench_items (body) SELECT 'item ' || g FROM generate_series(1, {rows}) AS g",
                     $"UPDATE llm.job SET scheduled_at = now() + interval '1 day' WHERE id > {before} AND state = 'pending'",
                 })
        {
            await using var command = new NpgsqlCommand(sql, connection, transaction) { CommandTimeout = 600 };
            await command.ExecuteNonQueryAsync();
        }

        await transaction.CommitAsync();
        backlog.Pool += rows;
    }

    private async Task<UpdateWindow> IdleWindowAsync(UserClients clients, long lowId, long highId, double windowSeconds)
    {
        await WaitUntilSettledAsync(0, TimeSpan.FromSeconds(60), onlyDue: true);
        var wal = await WalAsync();
        var idle = await clients.RunAsync(lowId, highId, windowSeconds);
        Progress($"user updates, worker idle: {idle}; {await WalSinceAsync(wal)}");
        return idle;
    }

    /// <summary>What every busy window of one side shares: the clients, their rows, the window, the ramp-up.</summary>
    private sealed record BusyWindowRun(UserClients Clients, long LowId, long HighId, double WindowSeconds, TimeSpan RampUp, string Label);

    /// <summary>
    /// Makes <paramref name="chunk"/> jobs due (topping the scheduled-ahead pool up first if it ran short, for
    /// the <paramref name="windowsLeft"/> busy windows still to come, this one included),
    /// waits the ramp-up, then runs one window of user updates: the updates, the jobs settled during the
    /// window per second, and whether jobs of the chunk were still queued at its end (the drain covered it);
    /// then returns the chunk's jobs still pending to the pool.
    /// </summary>
    private async Task<(UpdateWindow Window, double Rate, bool Covered)> BusyWindowAsync(BusyWindowRun run, UpdateBacklog backlog, int chunk, int windowsLeft)
    {
        if (backlog.Pool < chunk)
        {
            var rows = (long)chunk * windowsLeft;
            await AddScheduledAheadAsync(backlog, rows);
            Progress($"  the scheduled-ahead jobs ran short: {rows} rows added");
        }

        var due = await _db.ScalarAsync<long[]>(
            "WITH d AS (UPDATE llm.job SET scheduled_at = now() WHERE id IN (SELECT id FROM llm.job WHERE state = 'pending' AND scheduled_at > now() " +
            $"ORDER BY id LIMIT {chunk}) RETURNING id) SELECT ARRAY[min(id), max(id)] FROM d");
        backlog.Pool -= chunk;
        await _db.ExecuteAsync("SELECT pg_notify('pgllm_jobs', '')");
        await Task.Delay(run.RampUp);
        var clock = Stopwatch.StartNew();
        var walBusy = await WalAsync();
        var windowStart = await _db.ScalarAsync<DateTime>("SELECT clock_timestamp()");
        var busy = await run.Clients.RunAsync(run.LowId, run.HighId, run.WindowSeconds);
        var seconds = clock.Elapsed.TotalSeconds;
        var busyWal = await WalSinceAsync(walBusy);
        // Jobs settled during the window, whichever chunk they came from.
        await using var settled = _db.CreateCommand("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND finished_at >= $1 AND finished_at < $1 + make_interval(secs => $2)");
        settled.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = windowStart });
        settled.Parameters.Add(new NpgsqlParameter<double> { TypedValue = seconds });
        var done = (long)(await settled.ExecuteScalarAsync())!;
        var stillQueued = await _db.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE id BETWEEN {due[0]} AND {due[1]} AND state IN ('pending', 'running')");
        backlog.Observe(done / seconds, seconds, covered: stillQueued > 0);
        // What is left of the chunk goes back to the jobs scheduled ahead (the jobs in flight finish meanwhile;
        // an idle window waits for them): no window follows a long drain of leftovers, and the next chunk takes
        // them again.
        backlog.Pool += await PostponeLeftoversAsync(due);
        Progress($"user updates, worker draining ({run.Label}, {done / seconds:0} jobs/s): {busy}" +
                 (stillQueued == 0 ? $" (the drain ended before the window did: next chunk {backlog.Chunk} jobs)" : $" ({stillQueued} jobs still queued at the end)") +
                 $"; {busyWal}");
        return (busy, done / seconds, stillQueued > 0);
    }

    private async Task<(long Low, long High)> IdRangeAsync()
    {
        await using var command = _db.CreateCommand("SELECT min(id), max(id) FROM public.bench_items WHERE body LIKE 'item %'");
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetInt64(1));
    }

    private sealed record WalStats(long Bytes, long FullPageImages, long Syncs, double Seconds);

    private async Task<WalStats> WalAsync()
    {
        await using var command = _db.CreateCommand(
            "SELECT wal_bytes::bigint, wal_fpi, wal_sync, extract(epoch FROM clock_timestamp())::float8 FROM pg_stat_wal");
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new WalStats(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetDouble(3));
    }

    /// <summary>What the server wrote to its WAL since <paramref name="start"/>: every user commit waits for its flush.</summary>
    private async Task<string> WalSinceAsync(WalStats start)
    {
        var end = await WalAsync();
        var seconds = end.Seconds - start.Seconds;
        return $"WAL {(end.Bytes - start.Bytes) / seconds / 1e6:0.0} MB/s, {(end.FullPageImages - start.FullPageImages) / seconds:0} full-page images/s, {(end.Syncs - start.Syncs) / seconds:0} syncs/s";
    }

    // ---------------------------------------------------------------------------------------------
    // Memory
    // ---------------------------------------------------------------------------------------------

    private async Task MeasurePeakRssAsync()
    {
        var run = await DrainAsync(TimeSpan.Zero, _settings.RssJobs, FastModelWorker);
        Progress($"worker process peak RSS draining {run.Succeeded} jobs: {run.PeakRssMb:0.0} MB (after warm-up, before the drain: {run.WarmRssMb:0.0} MB; {run.JobsPerSecond:0} jobs/s)");
        _results["worker_rss_after_warm_up_mb"] = Math.Round(run.WarmRssMb, 1);
        _results["worker_peak_rss_mb"] = Math.Round(run.PeakRssMb, 1);
        _results["worker_peak_rss_jobs"] = _settings.RssJobs;
        _results["worker_peak_rss_drain_jobs_per_s"] = Math.Round(run.JobsPerSecond, 0);
    }

    // ---------------------------------------------------------------------------------------------
    // Plumbing
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Existing rows enqueued by llm.backfill (what `pgllm backfill` runs), batch after batch until done:
    /// the rows are inserted with the triggers off, so every one of them is the backfill's to enqueue.
    /// </summary>
    private async Task MeasureBackfillAsync()
    {
        await ResetAsync();
        await _db.ExecuteAsync("ALTER TABLE public.bench_items DISABLE TRIGGER USER");
        try
        {
            await _db.ExecuteAsync(
                $"INSERT INTO public.bench_items (body) SELECT 'existing ' || g FROM generate_series(1, {_settings.BackfillRows}) AS g");
        }
        finally
        {
            await _db.ExecuteAsync("ALTER TABLE public.bench_items ENABLE TRIGGER USER");
        }

        await _db.ExecuteAsync("VACUUM ANALYZE public.bench_items");
        var clock = Stopwatch.StartNew();
        var batches = 0;
        var maxBatches = (_settings.BackfillRows / BackfillBatch) + 10;
        var done = false;
        while (!done && batches < maxBatches)
        {
            done = await _db.ScalarAsync<bool>(
                $"SELECT done FROM llm.backfill('public.bench_items:label', p_only_empty => true, p_batch => {BackfillBatch})");
            batches++;
        }

        var elapsed = clock.Elapsed.TotalSeconds;
        var enqueued = await _db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'");
        if (!done || enqueued != _settings.BackfillRows)
        {
            throw new InvalidOperationException($"backfill did not finish: {enqueued} of {_settings.BackfillRows} rows enqueued after {batches} batches");
        }

        _results["backfill_rows"] = enqueued;
        _results["backfill_rows_per_s"] = Math.Round(enqueued / elapsed, 0);
        Progress($"backfill: {enqueued} rows enqueued in {batches} batches of {BackfillBatch}, {elapsed:0.0} s, {enqueued / elapsed:0} rows/s");
        await ResetAsync();
    }

    private const int BackfillBatch = 10_000;

    /// <summary>The benchmark's tables, then PgLlm's core and the generated task scripts.</summary>
    private static async Task MigrateAsync(NpgsqlDataSource db) =>
        await new PgLlmMigrator(db, [PgLlmScript.Application("0001-bench", ReadSchema("0001-bench.sql")), .. PgLlm.Generated.PgLlmScripts.All]).MigrateAsync();

    private async Task ResetAsync()
    {
        await _db.ExecuteAsync("TRUNCATE public.bench_items, public.bench_plain, llm.job, llm.batch RESTART IDENTITY");
        await _db.ExecuteAsync("CHECKPOINT");
    }

    private void Report()
    {
        Console.WriteLine();
        Console.WriteLine($"{"key",-42} {"value",14}  target");
        foreach (var (key, value) in _results)
        {
            if (value is JsonObject)
            {
                continue;
            }

            Console.WriteLine($"{key,-42} {value?.ToJsonString().Trim('"'),14}  {Targets.Describe(key, value, judged: !_settings.Quick, _results)}");
        }

        var json = _results.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(_settings.OutputPath))!);
        File.WriteAllText(_settings.OutputPath, json + "\n");
        Console.WriteLine();
        Console.WriteLine($"Wrote {_settings.OutputPath}");
    }

    private async Task PrintStatementsAsync()
    {
        Console.WriteLine();
        Console.WriteLine("Top statements by total time (pg_stat_statements):");
        await using var command = _db.CreateCommand(
            "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 4), left(regexp_replace(query, '\\s+', ' ', 'g'), 110) " +
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25");
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            Console.WriteLine($"{reader.GetInt64(0),9} calls {reader.GetDecimal(1),10} ms {reader.GetDecimal(2),9} ms/call  {reader.GetString(3)}");
        }
    }

    private static JsonObject Machine() => new()
    {
        ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
        ["cpu"] = CpuModel(),
        ["cores"] = Environment.ProcessorCount,
        ["memory_gb"] = Math.Round(MemTotalKb() / 1024.0 / 1024.0, 1),
        ["dotnet"] = Environment.Version.ToString(),
    };

    private static string CpuModel()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static long MemTotalKb()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            return long.Parse(line["MemTotal:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static void Progress(string message) => Console.WriteLine($"  {DateTime.UtcNow:HH:mm:ss} {message}");

    private static string ReadSchema(string name)
    {
        using var stream = typeof(Suite).Assembly.GetManifestResourceStream("PgLlm.Benchmarks.Schema." + name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

internal static class DataSourceExtensions
{
    public static async Task ExecuteAsync(this NpgsqlDataSource db, string sql)
    {
        await using var command = db.CreateCommand(sql);
        command.CommandTimeout = 600;
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<T> ScalarAsync<T>(this NpgsqlDataSource db, string sql)
    {
        await using var command = db.CreateCommand(sql);
        command.CommandTimeout = 600;
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
