using Npgsql;
using PgLlm.Migrations;

namespace PgLlm.Tests.Integration;

/// <summary>
/// The queue's numbered migrations, applied one step at a time over a queue that holds jobs in every
/// state: no step loses or changes a job, and each step is journaled once.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class QueueUpgradeTests
{
    // The columns the first step made: later steps add columns (step 4 the answer record, step 11 the claim priority
    // and the run), never change these.
    private const string Jobs =
        "SELECT (to_jsonb(j) - ARRAY['answer', 'model', 'task_hash', 'cache_hit', 'estimated_cost', 'priority', 'run_id', 'batch_id', 'batch_tries'])::text FROM llm.job AS j ORDER BY j.id";

    private readonly PgLlmFixture _fixture;

    public QueueUpgradeTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task Jobs_in_every_state_survive_each_step_from_the_first_migration_to_the_last()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
        var application = PgLlmFixture.Scripts.Where(s => s.Kind == PgLlmScriptKind.Application).ToList();
        Assert.True(PgLlmQueueMigrations.All.Count >= 3);

        await MigrateAsync(db, application, steps: 1);
        await InsertJobsInEveryStateAsync(db);
        var jobs = await db.ListAsync<string>(Jobs);
        Assert.Equal(6, jobs.Count);

        for (var steps = 2; steps <= PgLlmQueueMigrations.All.Count; steps++)
        {
            var applied = await MigrateAsync(db, application, steps);
            Assert.Equal([PgLlmQueueMigrations.All[steps - 1].Name], applied);
            Assert.Equal(jobs, await db.ListAsync<string>(Jobs));
        }

        // Then the tables' scripts, as a deployment would apply them next.
        await new PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync();
        Assert.Equal(jobs, await db.ListAsync<string>(Jobs));
        Assert.Equal(
            PgLlmQueueMigrations.All.Select(m => m.Name),
            await db.ListAsync<string>("SELECT script_name FROM llm.migration WHERE stream ~ '^[0-9]{4}_' ORDER BY id"));

        // The answer record came after these jobs: nothing recorded, their tokens as they were.
        Assert.Equal(
            ["1|||||||", "2|||||||", "3||||||120|8", "4|||||||", "5||||||100|5", "6|||||||"],
            await db.ListAsync<string>(
                "SELECT concat(row_key->>'id', '|', answer, '|', model, '|', task_hash, '|', cache_hit, '|', estimated_cost, '|', input_tokens, '|', output_tokens) " +
                "FROM llm.job ORDER BY id"));

        // The kept jobs still work: the pending one is claimed, the failed one re-driven with its history.
        await db.ExecAsync("UPDATE llm.job SET scheduled_at = now() WHERE state = 'pending'");
        Assert.Equal(["{\"id\": 1}"], await db.ListAsync<string>("SELECT row_key::text FROM llm.claim('after', 10, 60)"));
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.retry_failed()"));
        Assert.Equal(4, await db.ScalarAsync<int>("SELECT jsonb_array_length(errors) FROM llm.job WHERE row_key = '{\"id\": 4}'"));

        // The job running since before the upgrade is rescued through the new settling functions, and its usage
        // (none recorded) is still that of its day.
        await db.ExecAsync("UPDATE llm.job SET lease_until = now() - interval '1 s' WHERE row_key = '{\"id\": 2}'");
        Assert.Equal(1, await db.ScalarAsync<int>("SELECT llm.rescue()"));
        Assert.Equal("pending|", await db.ScalarAsync<string>("SELECT concat(state, '|', answer) FROM llm.job WHERE row_key = '{\"id\": 2}'"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.usage_daily WHERE day > '2026-01-01'"));
    }

    /// <summary>Migrates with the application's scripts and the first <paramref name="steps"/> queue migrations; the names applied.</summary>
    private static async Task<IReadOnlyList<string>> MigrateAsync(NpgsqlDataSource db, IReadOnlyList<PgLlmScript> application, int steps)
    {
        var migrator = new PgLlmMigrator(db, application) { QueueMigrations = PgLlmQueueMigrations.All.Take(steps).ToList() };
        return (await migrator.MigrateAsync()).Applied.Where(n => n != "0001-test-tables" && n != "0002-typed-tables").ToList();
    }

    /// <summary>One job in each state, with what each state carries (lease, tokens, error history), at fixed times.</summary>
    private static async Task InsertJobsInEveryStateAsync(NpgsqlDataSource db)
    {
        await db.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'in ' || g FROM generate_series(1, 6) AS g");
        await db.ExecAsync("""
            INSERT INTO llm.job (task, row_key, state, attempt, max_attempts, scheduled_at, created_at, attempted_at, finished_at,
                                 locked_by, lease_until, inputs_hash, last_error, errors, input_tokens, output_tokens)
            VALUES ('public.flaky:output', '{"id": 1}', 'pending', 0, 3, '2030-01-01', '2026-01-01', NULL, NULL,
                    NULL, NULL, NULL, NULL, '[]', NULL, NULL),
                   ('public.flaky:output', '{"id": 2}', 'running', 1, 3, '2026-01-01', '2026-01-01', '2026-01-01 00:00:01', NULL,
                    'worker-1', '2030-01-01', NULL, NULL, '[]', NULL, NULL),
                   ('public.flaky:output', '{"id": 3}', 'succeeded', 2, 3, '2026-01-01', '2026-01-01', '2026-01-01 00:00:02', '2026-01-01 00:00:03',
                    NULL, NULL, 'a3', 'timeout', '[{"attempt": 1, "kind": "transient", "error": "timeout"}]', 120, 8),
                   ('public.flaky:output', '{"id": 4}', 'failed', 3, 3, '2026-01-01', '2026-01-01', '2026-01-01 00:00:02', '2026-01-01 00:00:03',
                    NULL, NULL, NULL, 'bad answer',
                    '[{"attempt": 1, "kind": "invalid", "error": "bad answer"}, {"at": "2026-01-01T00:00:01+00:00", "event": "retried after failing"},
                      {"attempt": 1, "kind": "invalid", "error": "bad answer"}]', NULL, NULL),
                   ('public.flaky:output', '{"id": 5}', 'superseded', 1, 3, '2026-01-01', '2026-01-01', '2026-01-01 00:00:02', '2026-01-01 00:00:03',
                    NULL, NULL, 'a5', 'the inputs changed while the model was answering; the newer values get their own job', '[]', 100, 5),
                   ('public.flaky:output', '{"id": 6}', 'skipped', 1, 3, '2026-01-01', '2026-01-01', '2026-01-01 00:00:02', '2026-01-01 00:00:03',
                    NULL, NULL, NULL, 'the row no longer exists', '[]', NULL, NULL);
            """);
    }
}
