using System.Globalization;
using Npgsql;

namespace PgLlm.Benchmarks;

/// <summary>The <c>rerun_pickup</c> group: live work first while a re-run is in progress.</summary>
internal sealed partial class Suite
{
    /// <summary>The model latency of the re-run measurement: a fast real model's.</summary>
    private static readonly TimeSpan RerunModelLatency = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Pickup latency (as the <c>pickup</c> group measures it) of live inserts, with the worker of the 200 ms setup
    /// against a 200 ms model: first idle (<c>pickup_ms_p50_before_rerun</c>), then while it drains
    /// <see cref="SuiteSettings.RerunJobs"/> re-run jobs pending at priority 1 (<c>pickup_ms_p50_during_rerun</c>,
    /// target: at most twice the idle p50). The re-run keeps every slot of the worker busy throughout.
    /// </summary>
    private async Task MeasurePickupDuringRerunAsync()
    {
        await ResetAsync();
        // The rows the re-run runs again: inserted (their own jobs dropped) before the worker starts.
        await _db.ExecuteAsync($"INSERT INTO public.bench_items (body) SELECT 'rerun ' || g FROM generate_series(1, {_settings.RerunJobs}) AS g");
        await _db.ExecuteAsync("TRUNCATE llm.job");
        await _db.ExecuteAsync("VACUUM ANALYZE public.bench_items");
        _model.Latency = TimeSpan.Zero;
        await using var child = WorkerChild.Start(_db.ConnectionString, _model.BaseUrl, _model.ApiKey, SlowModelWorker);
        await WarmUpAsync();
        _model.Latency = RerunModelLatency;
        var (idle, idleMissing) = await PickupLatenciesAsync();

        var run = await AddRerunJobsAsync();
        var (during, duringMissing) = await PickupLatenciesAsync();
        var left = await _db.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE run_id = {run} AND state = 'pending'");
        await child.StopAsync();
        _model.Latency = TimeSpan.Zero;

        var idleP50 = Stats.Percentile(idle, 50);
        var duringP50 = Stats.Percentile(during, 50);
        Progress($"pickup before the re-run: p50 {idleP50:0.00} ms, p99 {Stats.Percentile(idle, 99):0.00} ms over {idle.Count} jobs" +
                 (idleMissing > 0 ? $", {idleMissing} never arrived" : string.Empty));
        Progress($"pickup during the re-run: p50 {duringP50:0.00} ms, p99 {Stats.Percentile(during, 99):0.00} ms over {during.Count} jobs" +
                 (duringMissing > 0 ? $", {duringMissing} never arrived" : string.Empty) + $"; {left} of {_settings.RerunJobs} re-run jobs still pending at the end");
        if (left == 0)
        {
            throw new InvalidOperationException("the re-run finished before the pickup measurement did: it did not measure pickup during a re-run");
        }

        _results["pickup_ms_p50_before_rerun"] = Math.Round(idleP50, 3);
        _results["pickup_ms_p50_during_rerun"] = Math.Round(duringP50, 3);
        _results["pickup_ms_p99_during_rerun"] = Math.Round(Stats.Percentile(during, 99), 3);
        _results["pickup_during_rerun_ratio"] = Math.Round(duringP50 / idleP50, 3);
        _results["rerun_jobs"] = _settings.RerunJobs;
        await ResetAsync();
    }

    /// <summary>
    /// A re-run of every row of the task's table, as <c>llm.run_enqueue</c> makes it (priority 1, tagged with its run),
    /// in one statement; waits until the worker's slots are full of its jobs. Returns the run's id.
    /// </summary>
    private async Task<long> AddRerunJobsAsync()
    {
        var run = await _db.ScalarAsync<long>(
            $"INSERT INTO llm.run (task, kind, selection, rows) VALUES ('public.bench_items:label', 'rerun', 'stale', {_settings.RerunJobs}) RETURNING id");
        await _db.ExecuteAsync(
            "INSERT INTO llm.job (task, row_key, max_attempts, priority, run_id) " +
            $"SELECT 'public.bench_items:label', jsonb_build_object('id', i.id), 3, 1, {run.ToString(CultureInfo.InvariantCulture)} " +
            "FROM public.bench_items AS i WHERE i.body LIKE 'rerun %' ORDER BY i.id; NOTIFY pgllm_jobs");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (await _db.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE run_id = {run} AND state = 'running'") < SlowModelWorker.Concurrency / 2)
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException("the worker did not take up the re-run's jobs within 30 s");
            }

            await Task.Delay(50);
        }

        return run;
    }
}
