using Npgsql;
using PgLlm.Migrations;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// pg_cron runs the worker: the schedule is created by the migration, and a scheduled run answers rows through the
/// real http extension (skipped, with the reason, when it is not installed).
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseScheduleTests
{
    // pg_cron 1.4 starts jobs on minute boundaries: the first run comes within a minute.
    private static readonly TimeSpan ScheduledRunBound = TimeSpan.FromSeconds(75);
    private readonly InDatabaseFixture _fixture;

    public InDatabaseScheduleTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [RealHttpFact]
    public async Task The_migration_schedules_the_worker_with_pg_cron_and_a_scheduled_run_answers_rows_through_the_http_extension()
    {
        await using var db = NpgsqlDataSource.Create(_fixture.Postgres.GetConnectionString(InDatabaseFixture.CronDatabase));
        await db.ExecAsync("CREATE EXTENSION IF NOT EXISTS pg_cron");
        await db.ExecAsync("CREATE EXTENSION IF NOT EXISTS http");
        // Configured before it is scheduled, so that the first scheduled run works.
        await new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Schedule = false })).MigrateAsync();
        await _fixture.ConfigureAsync(db);
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM cron.job"));
        await new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Workers = 2 })).MigrateAsync();

        Assert.Equal(
            ["pgllm-worker-1|* * * * *|CALL llm.run_worker()|pgllm_cron|postgres", "pgllm-worker-2|* * * * *|CALL llm.run_worker()|pgllm_cron|postgres"],
            await db.ListAsync<string>("SELECT concat_ws('|', jobname, schedule, command, database, username) FROM cron.job ORDER BY jobname"));

        // Fewer workers: the extra job goes.
        await new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Workers = 1 })).MigrateAsync();
        Assert.Equal(["pgllm-worker-1"], await db.ListAsync<string>("SELECT jobname FROM cron.job ORDER BY jobname"));

        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'scheduled')");
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<string?>("SELECT output FROM items WHERE id = 1") is not null,
            ScheduledRunBound, "a run started by pg_cron to answer row 1");

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        // The real extension made the call, and the row holds what the model answered.
        Assert.Equal("public", await db.ScalarAsync<string>("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'http'"));
        var request = Assert.Single(_fixture.Model.Requests);
        Assert.Equal("Echo scheduled", request.UserText);
        Assert.Equal(InDatabaseWorkerTests.AnswerOf(request, "output"), await db.ScalarAsync<string>("SELECT output FROM items WHERE id = 1"));
        Assert.StartsWith("CALL llm.run_worker()", await db.ScalarAsync<string>("SELECT command FROM cron.job_run_details ORDER BY runid LIMIT 1"), StringComparison.Ordinal);

        // While that run loops (about 55 s), a new row is picked up without waiting for the next minute:
        // no run starts between the two pickups (pg_cron records a run as it starts it, so the
        // running run is recorded by now; its id is the highest).
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM cron.job_run_details WHERE status = 'running')"),
            TimeSpan.FromSeconds(10), "pg_cron to record the running run");
        var lastRun = await db.ScalarAsync<long>("SELECT max(runid) FROM cron.job_run_details");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (2, 'soon after')");
        await Conditions.WaitUntilAsync(async () => await db.ScalarAsync<string?>("SELECT output FROM items WHERE id = 2") is not null,
            TimeSpan.FromSeconds(10), "the looping run to answer row 2");
        Assert.Equal(lastRun, await db.ScalarAsync<long>("SELECT max(runid) FROM cron.job_run_details"));

        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.unschedule_worker()"));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM cron.job"));
    }
}
