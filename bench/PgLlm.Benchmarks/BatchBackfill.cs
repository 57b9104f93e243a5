using System.Diagnostics;
using Npgsql;

namespace PgLlm.Benchmarks;

/// <summary>The <c>batch_backfill</c> group: a backfill through the batch tier.</summary>
internal sealed partial class Suite
{
    /// <summary>
    /// <see cref="SuiteSettings.BatchBackfillRows"/> existing rows (1,000,000 in the full run) backfilled through the batch
    /// tier against the local server's Batch API, whose batches complete as soon as their lines are answered: from the
    /// worker's start until every row is written, rows per second (<c>batch_backfill_rows_per_s</c>) and the worker
    /// process's peak memory (<c>batch_worker_peak_rss_mb</c>, target at most 200 MB). The time is split by the batches'
    /// own timestamps into taking jobs and writing lines plus the upload (created to submitted) and the provider's
    /// answer plus the settling of the output (submitted to finished), which names the bottleneck.
    /// </summary>
    private async Task MeasureBatchBackfillAsync()
    {
        await ResetAsync();
        var rows = _settings.BatchBackfillRows;
        await _db.ExecuteAsync("ALTER TABLE public.bench_items DISABLE TRIGGER USER");
        try
        {
            await _db.ExecuteAsync($"INSERT INTO public.bench_items (body) SELECT 'existing ' || g FROM generate_series(1, {rows}) AS g");
        }
        finally
        {
            await _db.ExecuteAsync("ALTER TABLE public.bench_items ENABLE TRIGGER USER");
        }

        while (!await _db.ScalarAsync<bool>($"SELECT done FROM llm.backfill('public.bench_items:label', true, {BackfillBatch}, false, 'batch')"))
        {
        }

        await _db.ExecuteAsync("VACUUM ANALYZE public.bench_items");
        await _db.ExecuteAsync("VACUUM ANALYZE llm.job");
        var clock = Stopwatch.StartNew();
        await using var child = WorkerChild.Start(_db.ConnectionString, _model.BaseUrl, _model.ApiKey, FastModelWorker, batchTier: true);
        await WaitForAsync(async () => await _db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") >= rows, TimeSpan.FromMinutes(20), "the batch backfill");
        var elapsed = clock.Elapsed.TotalSeconds;
        var peak = await child.StopAsync();

        var (batches, lines, preparing, answering) = await BatchPhasesAsync();
        var written = await _db.ScalarAsync<long>("SELECT count(*) FROM public.bench_items WHERE label IS NOT NULL");
        if (written != rows || lines != rows)
        {
            throw new InvalidOperationException($"the batch backfill wrote {written} of {rows} rows through {lines} lines");
        }

        _results["batch_backfill_rows"] = rows;
        _results["batch_backfill_rows_per_s"] = Math.Round(rows / elapsed, 0);
        _results["batch_worker_peak_rss_mb"] = Math.Round(peak, 1);
        _results["batch_backfill_batches"] = batches;
        _results["batch_backfill_prepare_and_upload_s"] = Math.Round(preparing, 1);
        _results["batch_backfill_answer_and_settle_s"] = Math.Round(answering, 1);
        Progress($"batch backfill: {rows} rows in {batches} batches, {elapsed:0.0} s, {rows / elapsed:0} rows/s, worker peak {peak:0.0} MB; " +
                 $"taking and writing lines + upload {preparing:0.0} s, answer + settling {answering:0.0} s (summed over batches)");
        await ResetAsync();
    }

    /// <summary>The batches, their lines, and the seconds spent from creation to submission and from submission to the end, summed.</summary>
    private async Task<(long Batches, long Lines, double Preparing, double Answering)> BatchPhasesAsync()
    {
        await using var command = _db.CreateCommand(
            "SELECT count(*), coalesce(sum(lines), 0), coalesce(sum(extract(epoch FROM submitted_at - created_at)), 0)::float8, " +
            "coalesce(sum(extract(epoch FROM finished_at - submitted_at)), 0)::float8 FROM llm.batch WHERE state = 'done'");
        await using var reader = await command.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetInt64(1), reader.GetDouble(2), reader.GetDouble(3));
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition, TimeSpan bound, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > bound)
            {
                throw new TimeoutException($"{what} did not finish within {bound.TotalMinutes:0} minutes");
            }

            await Task.Delay(TimeSpan.FromSeconds(1));
        }
    }
}
