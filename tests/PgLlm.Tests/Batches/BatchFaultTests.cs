using Npgsql;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Batches;

/// <summary>
/// The batch tier under faults, each against a local Batch API of its own: a worker stopped after its upload or after
/// the batch's creation (no second upload or batch; the results still written), failed and missing lines (retried,
/// then failed with their history), an expired batch (its unanswered jobs sent again, unspent), a row changed while its
/// line was in a batch (the stale answer not written) and a cancelled batch (its unanswered jobs back to pending).
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class BatchFaultTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);
    private readonly PgLlmFixture _fixture;

    public BatchFaultTests(PgLlmFixture fixture) => _fixture = fixture;

    [Theory]
    [InlineData("upload")]
    [InlineData("create")]
    public async Task A_worker_stopped_after_its_upload_or_the_batchs_creation_leaves_one_file_and_one_batch_and_the_next_worker_writes_the_results(string step)
    {
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 200);
        await db.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 1000, false, 'batch')");
        model.HoldAfterUpload = step == "upload";
        model.HoldAfterBatchCreate = step == "create";

        // The first worker's request hangs once the server has done it: the worker is stopped before it hears back.
        using (var stop = new CancellationTokenSource(Bound))
        {
            using var first = Ops.Worker(db.DataSource, Batch.Options(model));
            var running = first.RunAsync(stop.Token);
            await Eventually.TrueAsync(() => step == "upload" ? model.FileUploads == 1 : model.BatchesCreated == 1, "the server did the " + step, Bound);
            await stop.CancelAsync();
            await running;
        }

        Assert.Equal(step == "upload" ? "uploading" : "uploaded", await db.DataSource.ScalarAsync<string>("SELECT state FROM llm.batch"));
        model.HoldAfterUpload = model.HoldAfterBatchCreate = false;
        await Batch.DrainAsync(db.DataSource, model);

        Assert.Equal(1, model.FileUploads);
        Assert.Equal(1, model.BatchesCreated);
        Assert.Equal("done|200|200", await db.DataSource.ScalarAsync<string>("SELECT concat_ws('|', state, lines, succeeded) FROM llm.batch"));
        Assert.Equal(200L, await Batch.WrittenOnceAsync(db.DataSource));
        Assert.Equal(200, model.Requests.Count(r => r.ViaBatch));
    }

    [Fact]
    public async Task Failed_and_missing_lines_are_retried_in_a_later_batch_and_a_line_that_keeps_failing_fails_with_its_history()
    {
        const double Failed = 0.05, Missing = 0.01;
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 1000);
        await db.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 2000, false, 'batch')");
        var firstIds = await db.DataSource.ListAsync<string>("SELECT id || '-1-' || md5(jsonb_build_object('input', 'row ' || (row_key->>'id'))::text) FROM llm.job");
        var fates = firstIds.Select(id => LocalModelServer.GetBatchLineFate(id, Failed, Missing)).ToList();
        model.BatchFailedLineFraction = Failed;
        model.BatchMissingLineFraction = Missing;

        await Batch.DrainAsync(db.DataSource, model, o => o.Batch.MaxTries = 10);

        // The first batch's failed and missing lines are the ones the server chose; each was retried in a later batch.
        Assert.Equal(
            $"{fates.Count(f => f == BatchLineFate.Answered)}|{fates.Count(f => f == BatchLineFate.Failed)}|{fates.Count(f => f == BatchLineFate.Missing)}",
            await db.DataSource.ScalarAsync<string>("SELECT concat_ws('|', succeeded, failed, missing) FROM llm.batch ORDER BY id LIMIT 1"));
        Assert.True(fates.Count(f => f != BatchLineFate.Answered) > 20);
        Assert.True(await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch") >= 2);
        // Every row is written once; a job's failed lines are in its history; none failed for good (3 attempts each).
        Assert.Equal(1000L, await Batch.WrittenOnceAsync(db.DataSource));
        Assert.Equal(1000, model.Requests.Count(r => r.ViaBatch));
        Assert.Contains("the batch's output had no line for this job", await db.DataSource.ListAsync<string>(
            "SELECT DISTINCT e->>'error' FROM llm.job, jsonb_array_elements(errors) AS e"));

        // Lines that always fail: retried until the job's attempts are spent, then failed with one error per attempt.
        await using var always = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(always.DataSource, 10);
        await always.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 100, false, 'batch')");
        model.BatchFailedLineFraction = 1;
        model.BatchMissingLineFraction = 0;
        await Batch.DrainAsync(always.DataSource, model, o => o.Batch.MaxTries = 10);
        Assert.Equal(["failed|10|3"], await always.DataSource.ListAsync<string>(
            "SELECT concat_ws('|', state, count(*), min(jsonb_array_length(errors))) FROM llm.job GROUP BY state"));
        Assert.Equal("30|3", await always.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', (SELECT sum(failed) FROM llm.batch), (SELECT min(batch_tries) FROM llm.job))"));
        Assert.Equal(0, model.Requests.Count(r => !r.ViaBatch));

        // With one batch try, a failed line's job is retried on the normal path instead.
        await using var normal = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(normal.DataSource, 10);
        await normal.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 100, false, 'batch')");
        await Batch.DrainAsync(normal.DataSource, model, o => o.Batch.MaxTries = 1);
        Assert.Equal(10L, await Batch.WrittenOnceAsync(normal.DataSource));
        Assert.Equal("10|1|2", await normal.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*), max(priority), min(attempt)) FROM llm.job WHERE state = 'succeeded'"));
        Assert.Equal(10, model.Requests.Count(r => !r.ViaBatch));
    }

    [Fact]
    public async Task An_expired_batchs_answered_lines_are_written_and_its_other_jobs_go_into_a_new_batch_unspent()
    {
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 100);
        await db.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 1000, false, 'batch')");
        model.BatchExpireAfterLines = 30;

        using (var stop = new CancellationTokenSource(Bound))
        {
            using var worker = Ops.Worker(db.DataSource, Batch.Options(model));
            var running = worker.RunAsync(stop.Token);
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'expired'") == 1, "the first batch expired", Bound);
            model.BatchExpireAfterLines = null;
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'done'") == 1, "the second batch was settled", Bound);
            await stop.CancelAsync();
            await running;
        }

        Assert.Equal(["expired|100|30|0", "done|70|70|0"], await db.DataSource.ListAsync<string>(
            "SELECT concat_ws('|', state, lines, succeeded, missing) FROM llm.batch ORDER BY id"));
        // The 70 unanswered jobs did not spend an attempt on the expired batch.
        Assert.Equal(1, await db.DataSource.ScalarAsync<int>("SELECT max(attempt) FROM llm.job"));
        Assert.Equal(100L, await Batch.WrittenOnceAsync(db.DataSource));
    }

    [Fact]
    public async Task A_row_changed_while_its_line_is_in_a_batch_keeps_its_new_answer_and_the_batchs_stale_one_is_not_written()
    {
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 20);
        await db.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 100, false, 'batch')");
        // The batch answers its lines at once and reports completion only after this: time to change a row meanwhile.
        model.BatchCompletionDelay = TimeSpan.FromSeconds(3);

        using (var stop = new CancellationTokenSource(Bound))
        {
            using var worker = Ops.Worker(db.DataSource, Batch.Options(model));
            var running = worker.RunAsync(stop.Token);
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'submitted'") == 1, "the batch was submitted", Bound);
            await db.DataSource.ExecAsync("UPDATE flaky SET input = 'row 7 changed' WHERE id = 7");
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'done'") == 1, "the batch was settled", Bound);
            await Eventually.TrueAsync(async () => await Batch.WrittenOnceAsync(db.DataSource) == 20, "every row has the answer to its current input", Bound);
            await stop.CancelAsync();
            await running;
        }

        // The batch's answer to 'row 7' was not written: its job superseded; the live change's job wrote the new answer.
        Assert.Equal("superseded", await db.DataSource.ScalarAsync<string>(
            "SELECT state FROM llm.job WHERE row_key = '{\"id\": 7}' AND batch_id IS NOT NULL"));
        Assert.True(await db.DataSource.ScalarAsync<bool>(
            "SELECT inputs_hash = md5(jsonb_build_object('input', 'row 7 changed')::text) FROM llm.job WHERE row_key = '{\"id\": 7}' AND state = 'succeeded'"));
    }

    [Fact]
    public async Task A_cancelled_batch_writes_what_was_answered_and_gives_its_other_jobs_back_to_pending_unspent()
    {
        await using var model = await LocalModelServer.StartAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await Batch.InsertWithoutJobsAsync(db.DataSource, 50);
        await db.DataSource.ExecAsync($"SELECT llm.backfill('{Batch.Task}', true, 100, false, 'batch')");
        // Lines past the tenth wait until the batch was asked to cancel.
        using var gate = new ManualResetEventSlim();
        var answered = 0;
        model.Responder = request =>
        {
            if (Interlocked.Increment(ref answered) > 10)
            {
                gate.Wait(Bound);
            }

            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        using (var stop = new CancellationTokenSource(Bound))
        {
            using var worker = Ops.Worker(db.DataSource, Batch.Options(model));
            var running = worker.RunAsync(stop.Token);
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'submitted'") == 1, "the batch was submitted", Bound);
            // Paused, the task's jobs given back stay pending (a paused task's jobs go into no new batch).
            Assert.True(await db.DataSource.ScalarAsync<bool>($"SELECT llm.pause_task('{Batch.Task}')"));
            var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "batch", "cancel", "1");
            Assert.True(exit == 0, output);
            Assert.Contains("Cancel requested for batch 1", output, StringComparison.Ordinal);
            await Eventually.TrueAsync(() => model.BatchCancels == 1, "the worker cancelled the batch at the server", Bound);
            gate.Set();
            await Eventually.TrueAsync(async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.batch WHERE state = 'cancelled'") == 1, "the batch was cancelled", Bound);
            await stop.CancelAsync();
            await running;
        }

        // The lines answered before the cancel are written; the rest wait in the batch tier with no attempt spent.
        var written = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NOT NULL");
        Assert.InRange(written, 10, 11);
        Assert.Equal($"{written}|{50 - written}|0", await db.DataSource.ScalarAsync<string>(
            "SELECT concat_ws('|', count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'pending' AND priority = 2), " +
            "coalesce(max(attempt) FILTER (WHERE state = 'pending'), 0)) FROM llm.job"));
        var (listed, list) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "batch", "list");
        Assert.True(listed == 0, list);
        Assert.Contains($"Batch 1 cancelled: 50 lines, {written} answered, 0 failed, 0 missing", list, StringComparison.Ordinal);
    }
}
