using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Security;

/// <summary>
/// The three roles of docs/security.md, each connected as itself: the application role gets its writes
/// enqueued with no right on schema llm and can do nothing else there; the worker drains with no write right on
/// the queue, the registry or the tables; only the owner changes what the worker does.
/// </summary>
[Collection(SecurityGroup.Name)]
public sealed class PrivilegeTests
{
    private const string InsufficientPrivilege = "42501";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly SecurityFixture _fixture;

    public PrivilegeTests(SecurityFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task An_application_role_with_no_right_on_llm_gets_its_writes_enqueued()
    {
        await using var db = await _fixture.CreateDatabaseAsync();

        await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('I love it')");
        await db.App.ExecAsync($"INSERT INTO {SecurityFixture.HostileTable} (\"Kéy ID\", \"Body \"\"Text\"\"\") VALUES (7, 'note')");
        await db.App.ExecAsync("UPDATE flaky SET input = 'never inserted'");

        Assert.Equal(
            ["Sécurité 'Q'.Ünïcödé \"Notes\":summary", "public.reviews:emotion_es", "public.reviews:sentiment"],
            await db.Superuser.ListAsync<string>("SELECT task FROM llm.job WHERE state = 'pending' ORDER BY task"));
        Assert.Equal("{\"Kéy ID\": 7}", await db.Superuser.ScalarAsync<string>("SELECT row_key::text FROM llm.job WHERE task LIKE 'Sécurité%'"));
        await AssertDeniedAsync(db.App, "SELECT count(*) FROM llm.job");
    }

    [Fact]
    public async Task An_application_role_cannot_read_or_write_the_queue_or_the_registry_nor_call_any_function_even_with_usage_on_llm()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"GRANT USAGE ON SCHEMA llm TO {SecurityFixture.App}");
        await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('a real job')");
        var before = await QueueSnapshotAsync(db);
        var functions = await GeneratedFunctionsAsync(db, "public.reviews:sentiment");

        string[] attempts =
        [
            "SELECT * FROM llm.job",
            "SELECT * FROM llm.task",
            "SELECT * FROM llm.migration",
            "INSERT INTO llm.job (task, row_key, max_attempts) VALUES ('public.reviews:sentiment', '{\"id\": 1}', 5)",
            "UPDATE llm.job SET state = 'pending', attempt = 0",
            "DELETE FROM llm.job",
            "TRUNCATE llm.job",
            "UPDATE llm.task SET prompt = 'Reveal everything', target_columns = ARRAY['body']",
            "INSERT INTO llm.task SELECT * FROM llm.task",
            "DELETE FROM llm.task",
            "SELECT * FROM llm.claim('forger', 10, 60)",
            "SELECT llm.fail(1, 1, 'forged', 0, 'permanent')",
            "SELECT llm.skip(1, 1, 'forged')",
            "SELECT llm.release(1, 1)",
            "SELECT llm.rescue()",
            "SELECT llm.prune('0 seconds')",
            "SELECT llm.retry_failed()",
            "SELECT llm.settle(1, 1, 'succeeded', NULL, 0)",
            $"SELECT * FROM {functions.Inputs}(ARRAY[1]::bigint[])",
            $"SELECT {functions.Complete}(ARRAY[1]::bigint[], ARRAY[1], ARRAY['hash'], ARRAY['{{\"sentiment\": \"forged\"}}'::jsonb], NULL, NULL)",
            $"SELECT {functions.Enqueue}()",
            "CREATE TABLE llm.mine (x int)",
            "CREATE FUNCTION llm.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ];
        foreach (var sql in attempts)
        {
            await AssertDeniedAsync(db.App, sql);
        }

        // Not just the functions above: nothing in llm is executable or writable by the role, but the read of a
        // row's history (with the caller's rights, through llm.job_status) and the release of an edited cell (of a
        // column the caller may update).
        Assert.True(await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM pg_proc WHERE pronamespace = 'llm'::regnamespace") >= 15);
        Assert.Equal(["llm.release_cell(regclass,jsonb,text)", "llm.row_history(regclass,jsonb)"], await db.Superuser.ListAsync<string>(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'llm'::regnamespace AND has_function_privilege($1, oid, 'EXECUTE') ORDER BY 1",
            SecurityFixture.App));
        Assert.Equal(["job_status"], await db.Superuser.ListAsync<string>(
            "SELECT relname::text FROM pg_class WHERE relnamespace = 'llm'::regnamespace AND relkind IN ('r', 'v', 'S', 'p') " +
            "AND (has_table_privilege($1, oid, 'SELECT') OR (relkind <> 'S' AND has_table_privilege($1, oid, 'INSERT, UPDATE, DELETE, TRUNCATE')))",
            SecurityFixture.App));
        Assert.Equal(before, await QueueSnapshotAsync(db));
    }

    [Fact]
    public async Task A_role_cannot_get_work_queued_for_a_table_it_may_not_write()
    {
        await using var db = await _fixture.CreateDatabaseAsync();

        await AssertDeniedAsync(db.Outsider, "INSERT INTO reviews (body) VALUES ('forged')");
        await AssertDeniedAsync(db.Outsider, "INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'forged')");
        await AssertDeniedAsync(db.App, "INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'forged')");
        await AssertDeniedAsync(db.App, "INSERT INTO \"CRM Data\".\"Customer Notes\" (\"NoteId\", \"NoteText\") VALUES (gen_random_uuid(), 'forged')");

        Assert.Equal(0L, await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
    }

    [Fact]
    public async Task The_status_view_shows_a_role_only_the_jobs_of_tables_it_may_read_and_leaks_nothing_else()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"GRANT USAGE ON SCHEMA llm TO {SecurityFixture.App}, {SecurityFixture.Outsider}");
        await db.Superuser.ExecAsync("INSERT INTO reviews (body) VALUES ('readable')");
        await db.Superuser.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (4242, 1, 'secret order')");
        await db.Superuser.ExecAsync("INSERT INTO \"CRM Data\".\"Customer Notes\" (\"NoteId\", \"NoteText\") VALUES (gen_random_uuid(), 'secret note')");

        Assert.Equal(4L, await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.job_status"));
        Assert.Equal(["reviews", "reviews"], await db.App.ListAsync<string>("SELECT table_name FROM llm.job_status ORDER BY task"));
        Assert.Equal(0L, await db.Outsider.ScalarAsync<long>("SELECT count(*) FROM llm.job_status"));
        // A row's history is the same view's: the role that may read the table sees it, another role nothing.
        Assert.Equal(2L, await db.App.ScalarAsync<long>("SELECT count(*) FROM llm.row_history('reviews', (SELECT row_key FROM llm.job_status LIMIT 1))"));
        Assert.Equal(0L, await db.Outsider.ScalarAsync<long>("SELECT count(*) FROM llm.row_history('reviews', '{\"id\": 1}')"));
        Assert.Equal(0L, await db.App.ScalarAsync<long>("SELECT count(*) FROM llm.row_history('line_items', '{\"order_id\": 4242, \"line_no\": 1}')"));

        // A function of the caller's own in WHERE runs only on rows the view's filter let through.
        foreach (var (source, visible) in new[] { (db.App, 2), (db.Outsider, 0) })
        {
            var seen = new List<string>();
            await using var connection = await source.OpenConnectionAsync();
            connection.Notice += (_, e) => seen.Add(e.Notice.MessageText);
            await using (var create = new NpgsqlCommand(
                "CREATE FUNCTION pg_temp.peek(jsonb) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 " +
                "AS $$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$", connection))
            {
                await create.ExecuteNonQueryAsync();
            }

            await using (var query = new NpgsqlCommand("SELECT count(*) FROM llm.job_status WHERE pg_temp.peek(row_key)", connection))
            {
                Assert.Equal((long)visible, (long)(await query.ExecuteScalarAsync())!);
            }

            Assert.Equal(visible, seen.Count);
            Assert.DoesNotContain(seen, s => s.Contains("4242", StringComparison.Ordinal) || s.Contains("NoteId", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task The_worker_drains_as_its_own_role_and_may_write_nothing_but_through_its_functions()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('I love this'), ('This is terrible'), ('Fine')");
        await db.App.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        await db.App.ExecAsync($"INSERT INTO {SecurityFixture.HostileTable} (\"Kéy ID\", \"Body \"\"Text\"\"\") VALUES (1, 'a note')");

        using var timeout = new CancellationTokenSource(Bound);
        var ran = await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(8, ran);
        Assert.Equal(["succeeded"], await db.Superuser.ListAsync<string>("SELECT DISTINCT state FROM llm.job"));
        Assert.Equal(["negative", "neutral", "positive"], await db.App.ListAsync<string>("SELECT sentiment FROM reviews ORDER BY sentiment"));
        Assert.Equal(0L, await db.App.ScalarAsync<long>("SELECT count(*) FROM reviews WHERE emotion IS NULL OR body_es IS NULL"));
        Assert.NotNull(await db.App.ScalarAsync<string?>($"SELECT \"Summary 'Σ'\" FROM {SecurityFixture.HostileTable}"));

        var functions = await GeneratedFunctionsAsync(db, "public.reviews:sentiment");
        string[] attempts =
        [
            "INSERT INTO llm.job (task, row_key, max_attempts) VALUES ('public.reviews:sentiment', '{\"id\": 1}', 5)",
            "UPDATE llm.job SET state = 'pending'",
            "DELETE FROM llm.job",
            "UPDATE llm.task SET target_columns = ARRAY['body']",
            "INSERT INTO llm.task SELECT * FROM llm.task",
            "SELECT * FROM reviews",
            "UPDATE reviews SET body = 'rewritten'",
            "SELECT llm.retry_failed()",
            "SELECT llm.settle(1, 1, 'pending', NULL, 0)",
            $"SELECT {functions.Enqueue}()",
            "CREATE FUNCTION llm.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ];
        foreach (var sql in attempts)
        {
            await AssertDeniedAsync(db.Worker, sql);
        }

        Assert.Equal(8L, await db.Worker.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
    }

    [Fact]
    public async Task A_serving_worker_is_woken_by_an_application_roles_write()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // No polling within the test's bound: only the trigger's NOTIFY, sent with the owner's rights
        // from the application role's transaction, can wake the worker listening as its own role.
        var worker = _fixture.CreateWorker(db.Worker, o => o.PollInterval = TimeSpan.FromMinutes(10));
        using var stop = new CancellationTokenSource();
        var serving = worker.RunAsync(stop.Token);
        try
        {
            // The worker found the queue empty and sleeps: it advertised it in llm.sleeping_worker.
            await WaitUntilAsync(async () => await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.sleeping_worker") > 0);
            await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('I love it')");

            await WaitUntilAsync(async () => await db.App.ScalarAsync<string?>("SELECT sentiment FROM reviews") is not null);
            Assert.Equal("positive", await db.App.ScalarAsync<string?>("SELECT sentiment FROM reviews"));
        }
        finally
        {
            await stop.CancelAsync();
            await serving;
        }
    }

    [Fact]
    public async Task Nothing_in_a_job_row_names_what_the_worker_runs_or_writes()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.App.ExecAsync("INSERT INTO reviews (id, body, title) VALUES (1, 'I love it', 'kept')");
        // Only the owner can write jobs at all; even its jobs cannot steer the worker: extra keys in a row
        // key are not columns to write, and a task name the registry does not hold runs nothing.
        await db.Superuser.ExecAsync("DELETE FROM llm.job");
        await db.Owner.ExecAsync(
            "INSERT INTO llm.job (task, row_key, max_attempts) VALUES " +
            "('public.reviews:sentiment', '{\"id\": 1, \"body\": \"pwned\", \"title\": \"pwned\"}', 5), " +
            "('public.reviews:body', '{\"id\": 1}', 5), " +
            "('x''; UPDATE reviews SET body = ''pwned''; --', '{\"id\": 1}', 5)");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        Assert.Equal("I love it|kept|positive", await db.App.ScalarAsync<string>("SELECT body || '|' || title || '|' || sentiment FROM reviews"));
        Assert.Equal(["skipped", "skipped", "succeeded"], await db.Superuser.ListAsync<string>("SELECT state FROM llm.job ORDER BY state"));
        Assert.Equal(1, _fixture.Model.RequestCount);
    }

    [Fact]
    public async Task A_tasks_write_back_refuses_a_job_of_another_task()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.App.ExecAsync("INSERT INTO reviews (id, body, title) VALUES (1, 'I love it', 'kept')");
        await db.App.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        await db.Superuser.ExecAsync("DELETE FROM llm.job WHERE task <> 'public.reviews:sentiment'");

        // The worker role holds a job of one task and calls another task's write-back with it: the row
        // key {"id": 1} also names a row of that task's table, and the hash is one anyone can compute.
        var job = await db.Worker.ScalarAsync<long>("SELECT id FROM llm.claim('forger', 1, 60)");
        var complete = await db.Worker.ScalarAsync<string>("SELECT complete_function::text FROM llm.task WHERE name = 'public.flaky:output'");
        var state = await db.Worker.ScalarAsync<string>(
            $"SELECT ({complete}(ARRAY[$1::bigint], ARRAY[1], ARRAY[md5(jsonb_build_object('input', 'x')::text)], ARRAY['{{\"output\": \"pwned\"}}'::jsonb], NULL, NULL))[1]", job);

        Assert.Equal("lost", state);
        Assert.Null(await db.Superuser.ScalarAsync<string?>("SELECT output FROM flaky WHERE id = 1"));
        Assert.Equal("running|public.reviews:sentiment", await db.Superuser.ScalarAsync<string>("SELECT state || '|' || task FROM llm.job WHERE id = $1", job));
    }

    [Fact]
    public async Task Every_function_in_llm_pins_its_search_path_and_none_of_the_queues_builds_sql_at_run_time()
    {
        await using var db = await _fixture.CreateDatabaseAsync();

        var pinned = await db.Superuser.ListAsync<string>(
            "SELECT oid::regprocedure::text || ' ' || coalesce(array_to_string(proconfig, ';'), '(none)') FROM pg_proc WHERE pronamespace = 'llm'::regnamespace");
        Assert.True(pinned.Count >= 15);
        // search_path first; a function may add planner settings after it (llm.claim does).
        Assert.All(pinned, f => Assert.Matches(@"\) search_path=pg_catalog, pg_temp(;enable_\w+=off)*(;plan_cache_mode=force_generic_plan)?$", f));

        // The worker's calls and every generated function run with the owner's rights (so neither the
        // application role nor the worker needs a right on the queue), and none runs dynamic SQL.
        var owned = await db.Superuser.ListAsync<string>(
            "SELECT p.oid::regprocedure::text || ' ' || p.prosecdef || ' ' || (p.prosrc ~* '\\mEXECUTE\\M') FROM pg_proc AS p " +
            "WHERE p.oid IN (SELECT unnest(ARRAY[enqueue_function, inputs_function, complete_function])::oid FROM llm.task) " +
            "   OR p.oid::regproc::text IN ('llm.claim', 'llm.fail', 'llm.skip', 'llm.release', 'llm.rescue', 'llm.retry_failed', 'llm.prune') " +
            "ORDER BY 1");
        var taskCount = await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.task");
        // 7 functions, llm.claim in three signatures (with and without task filters, and the worker's, with its room for
        // re-run jobs), llm.fail in two (with and without the failed attempt's usage).
        Assert.Equal((int)(3 * taskCount) + 10, owned.Count);
        Assert.All(owned, f => Assert.EndsWith(" true false", f, StringComparison.Ordinal));
        Assert.Equal(["false false", "false false"], await db.Superuser.ListAsync<string>(
            "SELECT prosecdef || ' ' || (prosrc ~* '\\mEXECUTE\\M') FROM pg_proc WHERE pronamespace = 'llm'::regnamespace AND proname = 'settle'"));
    }

    [Fact]
    public async Task A_migration_by_an_owner_that_may_not_create_roles_stops_with_a_clear_error_until_the_worker_role_exists()
    {
        // Roles are cluster-wide: this needs a cluster where pgllm_worker was never created.
        await using var server = await LocalPostgres.StartAsync();
        await using var superuser = NpgsqlDataSource.Create(server.ConnectionString);
        await superuser.ExecAsync("CREATE ROLE plain_owner LOGIN");
        await superuser.ExecAsync("CREATE DATABASE app OWNER plain_owner");
        await using var owner = NpgsqlDataSource.Create(
            new NpgsqlConnectionStringBuilder(server.GetConnectionString("app")) { Username = "plain_owner" }.ConnectionString);

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(owner, PgLlmFixture.Scripts).MigrateAsync());
        Assert.Contains("PgLlm needs the role pgllm_worker", error.Message, StringComparison.Ordinal);
        Assert.Contains("CREATE ROLE pgllm_worker NOLOGIN", (error.InnerException as PostgresException)?.Hint ?? error.Message, StringComparison.Ordinal);

        await superuser.ExecAsync("CREATE ROLE pgllm_worker NOLOGIN");
        // The operations console's role (queue step 14), likewise.
        var console = await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(owner, PgLlmFixture.Scripts).MigrateAsync());
        Assert.Contains("CREATE ROLE pgllm_console NOLOGIN", (console.InnerException as PostgresException)?.Hint ?? console.Message, StringComparison.Ordinal);
        await superuser.ExecAsync("CREATE ROLE pgllm_console NOLOGIN");
        await new PgLlmMigrator(owner, PgLlmFixture.Scripts).MigrateAsync();
        Assert.True(await owner.ScalarAsync<long>("SELECT count(*) FROM llm.task") > 0);
        Assert.True(await owner.ScalarAsync<bool>("SELECT has_function_privilege('pgllm_worker', 'llm.claim(text,integer,double precision)', 'EXECUTE')"));
    }

    internal static async Task AssertDeniedAsync(NpgsqlDataSource source, string sql)
    {
        var error = await Assert.ThrowsAsync<PostgresException>(() => source.ExecAsync(sql));
        Assert.True(error.SqlState == InsufficientPrivilege, $"{sql}\n  expected permission denied (42501), got {error.SqlState}: {error.MessageText}");
    }

    private static Task<List<string>> QueueSnapshotAsync(SecureDatabase db) =>
        db.Superuser.ListAsync<string>("SELECT j::text FROM llm.job AS j ORDER BY id");

    private static async Task<(string Enqueue, string Inputs, string Complete)> GeneratedFunctionsAsync(SecureDatabase db, string task)
    {
        var names = await db.Superuser.ListAsync<string[]>(
            "SELECT ARRAY[enqueue_function::text, inputs_function::text, complete_function::text] FROM llm.task WHERE name = $1", task);
        return (names[0][0], names[0][1], names[0][2]);
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails when it does not within the bound.</summary>
    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound");
            await Task.Delay(50);
        }
    }
}
