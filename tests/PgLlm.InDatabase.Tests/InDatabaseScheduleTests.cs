using Npgsql;
using PgLlm.Migrations;

namespace PgLlm.InDatabase.Tests;

/// <summary>pg_cron runs the worker: the schedule is created by the migration, and a scheduled run answers a row.</summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseScheduleTests
{
    // pg_cron 1.4 starts jobs on minute boundaries: the first run comes within a minute.
    private static readonly TimeSpan ScheduledRunBound = TimeSpan.FromSeconds(150);
    private readonly InDatabaseFixture _fixture;

    public InDatabaseScheduleTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Responder = null;
        fixture.Model.Latency = TimeSpan.Zero;
        fixture.Model.ClearRequests();
    }

    [Fact]
    public async Task The_migration_schedules_the_worker_with_pg_cron_and_a_scheduled_run_answers_rows()
    {
        await using var db = NpgsqlDataSource.Create(_fixture.Postgres.GetConnectionString(InDatabaseFixture.CronDatabase));
        await db.ExecAsync("CREATE EXTENSION IF NOT EXISTS pg_cron");
        await db.ExecAsync(InDatabaseFixture.HttpStandIn);
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
        using var timeout = new CancellationTokenSource(ScheduledRunBound);
        while (await db.ScalarAsync<string?>("SELECT output FROM items WHERE id = 1") is null)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), timeout.Token);
        }

        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.StartsWith("CALL llm.run_worker()", await db.ScalarAsync<string>("SELECT command FROM cron.job_run_details ORDER BY runid LIMIT 1"), StringComparison.Ordinal);

        // While that run loops (about 55 s), a new row is picked up without waiting for the next minute.
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (2, 'soon after')");
        while (await db.ScalarAsync<string?>("SELECT output FROM items WHERE id = 2") is null)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(200), timeout.Token);
        }

        // No scheduled run started between the two pickups: the looping run took the second row.
        Assert.Equal(0, await db.ScalarAsync<long>(
            "SELECT count(*) FROM cron.job_run_details AS d " +
            "WHERE d.start_time > (SELECT attempted_at FROM llm.job WHERE row_key = '{\"id\": 1}') " +
            "AND d.start_time <= (SELECT attempted_at FROM llm.job WHERE row_key = '{\"id\": 2}')"));

        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.unschedule_worker()"));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM cron.job"));
    }
}
