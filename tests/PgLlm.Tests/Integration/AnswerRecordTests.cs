using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Npgsql;
using Microsoft.Extensions.Logging.Abstractions;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Local;
using PgLlm.Observability;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Tests.Integration;

/// <summary>
/// Each job's answer record (the answer written, the model, the task's hash, the tokens of every attempt, their cost,
/// the cache hit) and a row's history through <c>llm.row_history</c>.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class AnswerRecordTests
{
    private const string ReportedModel = "test-model-2026-01-01";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly PgLlmFixture _fixture;

    public AnswerRecordTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_row_updated_twice_has_its_jobs_in_order_with_the_answers_written_model_and_tokens()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // The endpoint names the model it ran (a dated version of the one asked) and reports usage.
        _fixture.Model.Responder = request => Completion($"{{\"output\": \"echo of {request.UserText}\"}}", ReportedModel, 11, 4);
        var written = new List<string>();
        foreach (var sql in new[]
                 {
                     "INSERT INTO flaky (id, input) VALUES (1, 'first')",
                     "UPDATE flaky SET input = 'second' WHERE id = 1",
                     "UPDATE flaky SET input = 'third' WHERE id = 1",
                 })
        {
            await db.ExecAsync(sql);
            using var timeout = new CancellationTokenSource(Bound);
            await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
            written.Add(await db.ScalarAsync<string>("SELECT output FROM flaky WHERE id = 1"));
        }

        Assert.Equal(["echo of Echo first", "echo of Echo second", "echo of Echo third"], written);
        var hash = await db.ScalarAsync<string>("SELECT definition_hash FROM llm.task WHERE name = 'public.flaky:output'");
        var history = await db.ListAsync<string>(
            "SELECT jsonb_build_array(task, state, answer, model, task_hash, input_tokens, output_tokens, cache_hit, attempts, " +
            "created_at <= finished_at)::text FROM llm.row_history('flaky', '{\"id\": 1}') ORDER BY job_id");
        Assert.Equal(
            written.Select(output => JsonSerializer.Serialize(new object?[]
            {
                "public.flaky:output", "succeeded", new { output }, ReportedModel, hash, 11, 4, false, 1, true,
            })).Select(Normalize),
            history.Select(Normalize));
        // In order: the function's own order is the jobs' (ids ascending), and the times agree.
        Assert.Equal(
            await db.ListAsync<long>("SELECT id FROM llm.job ORDER BY id"),
            await db.ListAsync<long>("SELECT job_id FROM llm.row_history('public.flaky'::regclass, '{\"id\": 1}')"));
        Assert.Empty(await db.ListAsync<long>("SELECT job_id FROM llm.row_history('flaky', '{\"id\": 2}')"));
    }

    [Fact]
    public async Task An_invalid_answer_then_a_valid_one_counts_both_attempts_tokens_in_the_job_usage_and_status()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 2, 10)");
        var calls = 0;
        _fixture.Model.Responder = _ => Interlocked.Increment(ref calls) == 1
            ? Completion("{\"unrelated\": 1}", ReportedModel, 100, 7)
            : Completion("{\"output\": \"fine\"}", ReportedModel, 100, 5);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(2, calls);
        Assert.Equal("succeeded|2|200|12|{\"output\": \"fine\"}", await db.ScalarAsync<string>(
            "SELECT concat_ws('|', state, attempt, input_tokens, output_tokens, answer::text) FROM llm.job"));
        // The failed attempt's entry carries its own usage.
        Assert.Equal("invalid|100|7|" + ReportedModel, await db.ScalarAsync<string>(
            "SELECT concat_ws('|', errors->0->>'kind', errors->0->>'input_tokens', errors->0->>'output_tokens', errors->0->>'model') FROM llm.job"));
        // (200 * 2 + 12 * 10) / 1e6
        Assert.Equal(0.00052m, await db.ScalarAsync<decimal>("SELECT estimated_cost FROM llm.job"));
        Assert.Equal("200|12|0.000520", await db.ScalarAsync<string>(
            "SELECT concat_ws('|', input_tokens, output_tokens, estimated_cost) FROM llm.usage_daily WHERE task = 'public.flaky:output'"));
        var status = Assert.Single(await PgLlmStatus.ReadAsync(db), s => s.Task == "public.flaky:output");
        Assert.Equal((200L, 12L, (decimal?)0.00052m), (status.InputTokens, status.OutputTokens, status.EstimatedCost));
    }

    [Fact]
    public async Task An_answer_the_columns_refuse_counts_its_tokens_and_records_no_answer()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky ADD CONSTRAINT output_not_bad CHECK (output <> 'bad')");
        var calls = 0;
        _fixture.Model.Responder = _ => Interlocked.Increment(ref calls) == 1
            ? Completion("{\"output\": \"bad\"}", ReportedModel, 40, 2)
            : Completion("{\"output\": \"good\"}", ReportedModel, 40, 3);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("succeeded|80|5|good|invalid|40|2", await db.ScalarAsync<string>(
            "SELECT concat_ws('|', state, input_tokens, output_tokens, answer->>'output', errors->0->>'kind', " +
            "errors->0->>'input_tokens', errors->0->>'output_tokens') FROM llm.job"));
        Assert.Contains("23514", await db.ScalarAsync<string>("SELECT errors->0->>'error' FROM llm.job"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Tokens_of_a_failed_attempt_count_while_the_job_waits_for_its_next_one()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        _fixture.Model.Responder = _ => Completion("not json at all", ReportedModel, 30, 9);
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        await using var queue = new JobQueueScope(db);
        var claimed = Assert.Single(await queue.Queue.ClaimAsync("test", 10, TimeSpan.FromMinutes(1), TaskFilter.Any, queue.Registry.FindAsync, CancellationToken.None));

        var settler = new JobSettler(db, queue.Queue, queue.Registry, new SecretRedactor(), new PgLlmWorkerOptions { RetryBaseDelay = TimeSpan.FromHours(1) }, NullLogger.Instance);
        var caller = new ModelCaller(ChatClientFactory.Create(TestOptions.For(_fixture.Model)), "test-model", 1 << 20);
        var task = (await queue.Registry.FindAsync(claimed.Job.Task, CancellationToken.None))!;
        var failure = await Assert.ThrowsAsync<InvalidAnswerException>(() => caller.AskAsync(task, claimed.Inputs!.Values, CancellationToken.None));
        await settler.FailAsync(claimed.Job, failure);

        Assert.Equal("pending|30|9|" + ReportedModel, await db.ScalarAsync<string>(
            "SELECT concat_ws('|', state, input_tokens, output_tokens, model) FROM llm.job"));
        Assert.Equal(30L, await db.ScalarAsync<long>("SELECT input_tokens FROM llm.usage_daily"));
        Assert.Equal(30L, Assert.Single(await PgLlmStatus.ReadAsync(db), s => s.Task == "public.flaky:output").InputTokens);
    }

    [Fact]
    public async Task A_cache_hit_is_marked_and_costs_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 2, 10)");
        var options = TestOptions.For(_fixture.Model, concurrency: 1); // concurrent identical calls may both miss
        options.AnswerCache.Enabled = true;
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'same'), (2, 'same')");

        using var timeout = new CancellationTokenSource(Bound);
        await new PgLlmWorker(db, ChatClientFactory.Create(options, db), Options.Create(options)).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(1, _fixture.Model.RequestCount);
        var records = await db.ListAsync<string>(
            "SELECT concat_ws('|', cache_hit, input_tokens > 0, output_tokens > 0, estimated_cost > 0, model, answer IS NOT NULL) FROM llm.job ORDER BY cache_hit");
        Assert.Equal(["f|t|t|t|test-model|t", "t|f|f|f|test-model|t"], records);
        Assert.Equal(0m, await db.ScalarAsync<decimal>("SELECT estimated_cost FROM llm.job WHERE cache_hit"));
    }

    [Fact]
    public async Task A_batch_written_at_once_records_each_answer_and_model_through_either_write_back_path()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'in ' || g FROM generate_series(1, 4) AS g");
        await using var queue = new JobQueueScope(db);
        var claimed = await queue.Queue.ClaimAsync("test", 10, TimeSpan.FromMinutes(1), TaskFilter.Any, queue.Registry.FindAsync, CancellationToken.None);
        var task = (await queue.Registry.FindAsync("public.flaky:output", CancellationToken.None))!;
        var writes = claimed.OrderBy(c => c.Job.Id).Select((c, i) => new WriteBack(
            task, c.Job, c.Inputs!.Hash, $"{{\"output\": \"answer {i}\"}}", 10 + i, i, "model-" + i, i == 3)).ToList();

        // The task's own write-back function for a batch of one task; llm.complete_batch for what it hands on.
        var first = await queue.Queue.CompleteBatchAsync(writes.Take(2).ToList(), CancellationToken.None);
        await using (var connection = await db.OpenConnectionAsync())
        {
            // A batch of two jobs of one task as llm.complete_batch takes it (several tasks, or a batch refused whole).
            await using var command = new NpgsqlCommand(
                "SELECT state FROM llm.complete_batch($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9)", connection);
            var rest = writes.Skip(2).ToList();
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.Task.Name).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.Job.Id).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.Job.Attempt).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.InputsHash).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.ResultJson).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.InputTokens!.Value).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.OutputTokens!.Value).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.Model!).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = rest.Select(w => w.CacheHit).ToArray() });
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                Assert.Equal("succeeded", reader.GetString(0));
            }
        }

        Assert.All(first, o => Assert.Equal("succeeded", o.State));
        Assert.Equal(
            Enumerable.Range(0, 4).Select(i => string.Create(CultureInfo.InvariantCulture, $"answer {i}|answer {i}|model-{i}|{10 + i}|{i}|{(i == 3 ? "t" : "f")}")),
            await db.ListAsync<string>(
                "SELECT concat_ws('|', j.answer->>'output', f.output, j.model, j.input_tokens, j.output_tokens, j.cache_hit) " +
                "FROM llm.job AS j JOIN flaky AS f ON f.id = (j.row_key->>'id')::bigint ORDER BY j.id"));
    }

    [Fact]
    public async Task A_stale_answer_counts_its_tokens_but_records_no_answer()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'first')");
        _fixture.Model.Responder = request =>
        {
            if (request.UserText == "Echo first")
            {
                using var connection = db.OpenConnection();
                using var update = new NpgsqlCommand("SET statement_timeout = '5s'; UPDATE flaky SET input = 'second' WHERE id = 1", connection);
                update.ExecuteNonQuery();
            }

            return Completion("{\"output\": \"for " + request.UserText + "\"}", ReportedModel, 20, 3);
        };

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(
            ["superseded|20|3", "succeeded|{\"output\": \"for Echo second\"}|20|3"],
            await db.ListAsync<string>("SELECT concat_ws('|', state, answer::text, input_tokens, output_tokens) FROM llm.row_history('flaky', '{\"id\": 1}')"));
    }

    [Fact]
    public async Task A_write_back_of_the_former_signature_keeps_working_until_its_table_script_replaces_it()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // The task's write-back as the table scripts of queue steps 2 and 3 made it: six arrays, no record.
        await db.ExecAsync("""
            DROP FUNCTION "llm"."public.flaky:output:write_back"(bigint[], integer[], text[], jsonb[], integer[], integer[], text[], boolean[]);
            CREATE FUNCTION "llm"."public.flaky:output:write_back"(p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                p_results jsonb[], p_input_tokens integer[], p_output_tokens integer[]) RETURNS text[]
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgllm$
            DECLARE
                v_settled integer[];
                v_written integer[];
            BEGIN
                WITH j AS (SELECT * FROM llm.settle_answers('public.flaky:output', p_job_ids, p_attempts, p_inputs_hashes, p_input_tokens, p_output_tokens)),
                     w AS (UPDATE "public"."flaky" AS t
                              SET "output" = r."output"
                             FROM (SELECT DISTINCT ON (j.row_key) j.row_key, j.n FROM j ORDER BY j.row_key, j.n) AS j
                            CROSS JOIN LATERAL jsonb_populate_record(NULL::"public"."flaky", j.row_key) AS k
                            CROSS JOIN LATERAL jsonb_populate_record(NULL::"public"."flaky", p_results[j.n]) AS r
                            WHERE t."id" = k."id"
                              AND md5(jsonb_build_object('input', t."input")::text) = p_inputs_hashes[j.n]
                        RETURNING j.n)
                SELECT (SELECT array_agg(j.n) FROM j), (SELECT array_agg(w.n) FROM w) INTO v_settled, v_written;
                RETURN llm.settle_unwritten('public.flaky:output', p_job_ids, p_attempts, p_inputs_hashes, p_results, p_input_tokens, p_output_tokens,
                                            v_settled, v_written);
            END
            $pgllm$;
            GRANT EXECUTE ON FUNCTION "llm"."public.flaky:output:write_back"(bigint[], integer[], text[], jsonb[], integer[], integer[]) TO pgllm_worker;
            UPDATE llm.task SET complete_function = '"llm"."public.flaky:output:write_back"' WHERE name = 'public.flaky:output';
            INSERT INTO flaky (id, input) SELECT g, 'in ' || g FROM generate_series(1, 3) AS g;
            """);
        _fixture.Model.Responder = request => Completion($"{{\"output\": \"for {request.UserText}\"}}", ReportedModel, 7, 2);
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
        }

        // Written and counted; nothing recorded (the former write-back does not take the record).
        Assert.Equal(
            ["for Echo in 1|succeeded|7|2|", "for Echo in 2|succeeded|7|2|", "for Echo in 3|succeeded|7|2|"],
            await db.ListAsync<string>(
                "SELECT concat_ws('|', f.output, j.state, j.input_tokens, j.output_tokens, coalesce(j.answer::text, j.model, j.cache_hit::text, '')) " +
                "FROM llm.job AS j JOIN flaky AS f ON f.id = (j.row_key->>'id')::bigint ORDER BY j.id"));

        // llm.complete_batch calls the former write-back with its six arrays; a job whose row changed goes
        // through it again on its own (llm.settle_unwritten).
        await db.ExecAsync("UPDATE flaky SET input = 'again ' || id WHERE id IN (1, 2)");
        await using (var queue = new JobQueueScope(db))
        {
            var claimed = await queue.Queue.ClaimAsync("test", 10, TimeSpan.FromMinutes(1), TaskFilter.Any, queue.Registry.FindAsync, CancellationToken.None);
            Assert.Equal(2, claimed.Count);
            await db.ExecAsync("UPDATE flaky SET input = 'changed' WHERE id = 2");
            await using var connection = await db.OpenConnectionAsync();
            await using var command = new NpgsqlCommand(
                "SELECT string_agg(state, ',' ORDER BY job_id) FROM llm.complete_batch($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9)", connection);
            var ordered = claimed.OrderBy(c => c.Job.Id).ToList();
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(_ => "public.flaky:output").ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(c => c.Job.Id).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(c => c.Job.Attempt).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(c => c.Inputs!.Hash).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(c => "{\"output\": \"batch\"}").ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(_ => 5).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(_ => 1).ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(_ => "model-b").ToArray() });
            command.Parameters.Add(new NpgsqlParameter { Value = ordered.Select(_ => false).ToArray() });
            Assert.Equal("succeeded,superseded", await command.ExecuteScalarAsync());
        }

        // The table's script applied again: the former overload is dropped, the new one registered and recording;
        // a call with six arrays (a worker of the former version) finds the new one.
        var script = PgLlm.Generated.PgLlmScripts.All.Single(s => s.Sql.Contains("\"public.flaky:output:write_back\"", StringComparison.Ordinal));
        await db.ExecAsync(script.Sql);
        Assert.Equal(
            ["bigint[], integer[], text[], jsonb[], integer[], integer[], text[], boolean[]"],
            await db.ListAsync<string>("SELECT oidvectortypes(p.proargtypes) FROM pg_proc AS p WHERE p.proname = 'public.flaky:output:write_back'"));
        await db.ExecAsync("UPDATE flaky SET input = 'third ' || id WHERE id = 3");
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await _fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
        }

        await db.ExecAsync("UPDATE flaky SET input = 'fourth' WHERE id = 3");
        await using (var queue = new JobQueueScope(db))
        {
            var job = Assert.Single(await queue.Queue.ClaimAsync("test", 10, TimeSpan.FromMinutes(1), TaskFilter.Any, queue.Registry.FindAsync, CancellationToken.None));
            await using var connection = await db.OpenConnectionAsync();
            await using var command = new NpgsqlCommand(
                "SELECT (\"llm\".\"public.flaky:output:write_back\"(ARRAY[$1], ARRAY[$2], ARRAY[$3], ARRAY['{\"output\": \"former worker\"}'::jsonb], ARRAY[3], ARRAY[1]))[1]",
                connection);
            command.Parameters.Add(new NpgsqlParameter { Value = job.Job.Id });
            command.Parameters.Add(new NpgsqlParameter { Value = job.Job.Attempt });
            command.Parameters.Add(new NpgsqlParameter { Value = job.Inputs!.Hash });
            Assert.Equal("succeeded", await command.ExecuteScalarAsync());
        }

        Assert.Equal(
            ["succeeded|for Echo third 3|" + ReportedModel + "|7|2", "succeeded|former worker|-|3|1"],
            await db.ListAsync<string>(
                "SELECT concat_ws('|', state, answer->>'output', coalesce(model, '-'), input_tokens, output_tokens) FROM llm.row_history('flaky', '{\"id\": 3}') WHERE job_id > (SELECT min(job_id) FROM llm.row_history('flaky', '{\"id\": 3}'))"));
    }

    /// <summary>A chat completion as an OpenAI-compatible endpoint sends it, naming <paramref name="model"/> and reporting usage.</summary>
    private static ModelReply Completion(string content, string model, int promptTokens, int completionTokens) =>
        ModelReply.Raw(200, JsonSerializer.Serialize(new
        {
            id = "chatcmpl-record",
            @object = "chat.completion",
            created = 1_767_225_600,
            model,
            choices = new[] { new { index = 0, message = new { role = "assistant", content }, finish_reason = "stop" } },
            usage = new { prompt_tokens = promptTokens, completion_tokens = completionTokens, total_tokens = promptTokens + completionTokens },
        }));

    private static string Normalize(string json) => JsonSerializer.Serialize(JsonDocument.Parse(json).RootElement);

    /// <summary>A queue and registry over <paramref name="db"/>, disposed together.</summary>
    private sealed class JobQueueScope(NpgsqlDataSource db) : IAsyncDisposable
    {
        public JobQueue Queue { get; } = new(db);

        public TaskRegistry Registry { get; } = new(db);

        public ValueTask DisposeAsync()
        {
            Queue.Dispose();
            Registry.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
