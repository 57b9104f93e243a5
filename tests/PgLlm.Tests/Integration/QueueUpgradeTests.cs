using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// The queue's state and attempt limit are domains (the core script): a queue created when they were
/// CHECK constraints on llm.job is converted in place by the next core script, its jobs kept.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class QueueUpgradeTests
{
    private readonly PgLlmFixture _fixture;

    public QueueUpgradeTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Responder = null;
        fixture.Model.Latency = TimeSpan.Zero;
        fixture.Model.ClearRequests();
    }

    [Fact]
    public async Task A_queue_with_check_constraints_becomes_the_domains_in_place_and_keeps_its_jobs()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        // llm.job as earlier core scripts created it: text and integer columns with CHECK constraints.
        await db.ExecAsync("""
            DROP VIEW llm.job_status;
            DROP VIEW llm.usage_daily;
            ALTER TABLE llm.job
                ALTER COLUMN state TYPE text,
                ALTER COLUMN max_attempts TYPE integer,
                ADD CONSTRAINT job_state_check
                    CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'superseded', 'skipped')),
                ADD CONSTRAINT job_max_attempts_check CHECK (max_attempts >= 1);
            """);
        await db.ExecAsync("INSERT INTO reviews (body) VALUES ('I love this, it is great')");
        await db.ExecAsync("UPDATE llm.job SET state = 'failed', finished_at = now() WHERE task = 'public.reviews:emotion_es'");
        var file = await db.ScalarAsync<long>("SELECT pg_relation_filenode('llm.job')::bigint");

        foreach (var script in PgLlmFixture.Scripts.Where(s => s.Kind != PgLlm.Migrations.PgLlmScriptKind.Application))
        {
            await db.ExecAsync(script.Sql);
        }

        Assert.Equal(
            "max_attempts:llm.job_max_attempts state:llm.job_state",
            await db.ScalarAsync<string>(
                "SELECT string_agg(attname || ':' || format_type(atttypid, NULL), ' ' ORDER BY attname) FROM pg_attribute " +
                "WHERE attrelid = 'llm.job'::regclass AND attname IN ('state', 'max_attempts')"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM pg_constraint WHERE conrelid = 'llm.job'::regclass AND contype = 'c'"));
        // Converted, not rewritten: the same file, the same jobs.
        Assert.Equal(file, await db.ScalarAsync<long>("SELECT pg_relation_filenode('llm.job')::bigint"));
        Assert.Equal(
            ["public.reviews:emotion_es failed", "public.reviews:sentiment pending"],
            await db.ListAsync<string>("SELECT task || ' ' || state FROM llm.job ORDER BY task"));
        // The domains still refuse what the constraints refused.
        var badState = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync("UPDATE llm.job SET state = 'done'"));
        Assert.Equal(PostgresErrorCodes.CheckViolation, badState.SqlState);
        Assert.Equal("job_state_check", badState.ConstraintName);
        var badLimit = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync("UPDATE llm.job SET max_attempts = 0"));
        Assert.Equal(PostgresErrorCodes.CheckViolation, badLimit.SqlState);
        // The views are back, and the queue drains as before.
        Assert.Equal(2L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job_status"));
        await _fixture.CreateWorker(db).RunUntilIdleAsync();
        Assert.Equal("positive", await db.ScalarAsync<string>("SELECT sentiment FROM reviews"));
        Assert.Equal(
            ["public.reviews:emotion_es failed", "public.reviews:sentiment succeeded"],
            await db.ListAsync<string>("SELECT task || ' ' || state FROM llm.job ORDER BY task"));
    }
}
