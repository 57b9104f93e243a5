using System.Diagnostics;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.OperationsConsole;

namespace PgLlm.Benchmarks;

/// <summary>The <c>console</c> group: the operations console's overview over a long history.</summary>
internal sealed partial class Suite
{
    /// <summary>The rows the history's jobs are of: several answered jobs per row, as updates make them.</summary>
    private const int ConsoleRows = 250_000;

    /// <summary>
    /// The overview's queries (<see cref="ConsoleQueries.ReadOverviewAsync"/>, as the console runs them: as the role
    /// pgllm_console) with <see cref="SuiteSettings.ConsoleHistoryJobs"/> finished jobs in history, spread over the last
    /// 30 days (a thousand of them dead letters), 2,000 pending and <see cref="ConsoleRows"/> rows written
    /// (<c>llm.row_version</c>): p50 and p99 of <see cref="SuiteSettings.ConsoleReads"/> reads after a warm-up
    /// (<c>console_overview_ms_p50</c>, <c>console_overview_ms_p99</c>; target under 100 ms), and the first read, which also
    /// reads the week's earlier days (<c>console_overview_ms_first</c>, reported).
    /// </summary>
    private async Task MeasureConsoleOverviewAsync()
    {
        await ResetAsync();
        var jobs = _settings.ConsoleHistoryJobs;
        await _db.ExecuteAsync("TRUNCATE llm.row_version");
        await _db.ExecuteAsync($"""
            INSERT INTO llm.job (task, row_key, state, attempt, max_attempts, created_at, attempted_at, finished_at, input_tokens, output_tokens,
                                 estimated_cost, model, answer, cache_hit)
            SELECT 'public.bench_items:label', jsonb_build_object('id', g % {ConsoleRows} + 1),
                   CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'superseded' ELSE 'succeeded' END, 1, 3,
                   t - interval '2 seconds', t - interval '800 milliseconds', t, 200 + g % 50, 10 + g % 7, 0.00004, 'bench-model',
                   CASE WHEN g % 1000 = 0 OR g % 97 = 0 THEN NULL ELSE jsonb_build_object('label', 'x') END, g % 20 = 0
              FROM generate_series(1, {jobs}) AS g
             CROSS JOIN LATERAL (SELECT now() - interval '30 days' * (1 - g::float8 / {jobs}) AS t) AS f
            """);
        await _db.ExecuteAsync("INSERT INTO llm.job (task, row_key, max_attempts) SELECT 'public.bench_items:label', jsonb_build_object('id', -g), 3 FROM generate_series(1, 2000) AS g");
        await _db.ExecuteAsync($"""
            INSERT INTO llm.row_version (task, row_key, definition_hash, written_at, job_id)
            SELECT 'public.bench_items:label', jsonb_build_object('id', g), (SELECT definition_hash FROM llm.task WHERE name = 'public.bench_items:label'), now(), g
              FROM generate_series(1, {ConsoleRows}) AS g
            """);
        await _db.ExecuteAsync("VACUUM ANALYZE llm.job");
        await _db.ExecuteAsync("VACUUM ANALYZE llm.row_version");

        // As the console connects: as pgllm_console, without JIT.
        await using var console = new ConsoleDatabase(Options.Create(new PgLlmConsoleOptions { ConnectionString = _db.ConnectionString }));
        var times = new List<double>();
        IReadOnlyList<ConsoleTask> overview = [];
        var first = Stopwatch.StartNew();
        overview = await ConsoleQueries.ReadOverviewAsync(console.DataSource);
        var firstMs = first.Elapsed.TotalMilliseconds;
        for (var i = 0; i < 4 + _settings.ConsoleReads; i++)
        {
            var clock = Stopwatch.StartNew();
            overview = await ConsoleQueries.ReadOverviewAsync(console.DataSource);
            if (i >= 4)
            {
                times.Add(clock.Elapsed.TotalMilliseconds);
            }
        }

        var task = overview.Single(t => t.Task == "public.bench_items:label");
        if (task.Pending != 2000 || task.Failed != jobs / 1000 || task.Filled != ConsoleRows)
        {
            throw new InvalidOperationException($"the overview read {task.Pending} pending, {task.Failed} failed, {task.Filled} filled: not the history made");
        }

        Progress($"console overview over {jobs} finished jobs: p50 {Stats.Percentile(times, 50):0.00} ms, p99 {Stats.Percentile(times, 99):0.00} ms over {times.Count} reads; " +
                 $"{task.Finished24h.Values.Sum()} jobs in the last 24 h");
        _results["console_overview_ms_p50"] = Math.Round(Stats.Percentile(times, 50), 3);
        _results["console_overview_ms_p99"] = Math.Round(Stats.Percentile(times, 99), 3);
        // The first read also reads the week's earlier days, which later reads take from memory (for 10 minutes).
        _results["console_overview_ms_first"] = Math.Round(firstMs, 3);
        _results["console_history_jobs"] = jobs;
        await _db.ExecuteAsync("TRUNCATE llm.row_version");
        await ResetAsync();
    }
}
