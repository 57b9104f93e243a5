using System.Diagnostics;
using Npgsql;
using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>
/// No database fault ends a worker: four real worker processes (<c>pgllm worker</c>) at concurrency 16 while
/// PostgreSQL restarts ten times (<c>-m fast</c> and <c>-m immediate</c> in turn), jobs flowing throughout.
/// </summary>
/// <remarks>
/// What a restart legitimately costs: a job whose claim committed but whose inputs could not be read waits
/// for its lease to expire (no model call is lost); an answer whose write-back finds no server is written
/// again on a new connection, so it is not asked for twice while the server comes back within the batcher's
/// backoff. An immediate stop is a crash: the claims and write-backs commit without waiting for their WAL
/// flush, so those of its last moments may be lost, and such a job is called once more than its final attempt
/// counter shows. Hence the bound checked here: every job called at most its attempt count plus one.
/// </remarks>
[Collection(IntegrationGroup.Name)]
public sealed class RestartFaultTests
{
    /// <summary>
    /// Short leases, so a job claimed just before a restart whose inputs could not be read is rescued soon. Small
    /// claims, so there are many of them, each reading two tasks' inputs, and restarts land between the two.
    /// </summary>
    private static readonly Dictionary<string, string> WorkerSettings = new()
    {
        ["Worker__Lease"] = "00:00:05",
        ["Worker__RescueInterval"] = "00:00:01",
        ["Worker__PollInterval"] = "00:00:00.500",
        ["Worker__BatchSize"] = "4",
        ["Worker__RetryBaseDelay"] = "00:00:00.100",
        ["Worker__RetryMaxDelay"] = "00:00:01",
    };

    private const int Workers = 4;
    private const int Restarts = 10;
    private static readonly TimeSpan Bound = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task Workers_survive_ten_database_restarts_and_every_one_claims_again_after_the_last()
    {
        await using var postgres = await LocalPostgres.StartAsync();
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.Zero });
        var connectionString = await postgres.CreateDatabaseAsync();
        await using var db = NpgsqlDataSource.Create(connectionString);
        await new PgLlm.Migrations.PgLlmMigrator(db, PgLlmFixture.Scripts).MigrateAsync();
        // A backlog that keeps every worker claiming through the restarts (an instant model: claims back to back).
        var rows = 1000;
        // Two tasks per row: a claim takes jobs of both, and reads each task's inputs in turn.
        await db.ExecAsync("INSERT INTO reviews (id, body) SELECT g, 'body ' || g FROM generate_series(1, $1) AS g", rows);

        var workers = Enumerable.Range(1, Workers).Select(i => WorkerProcess.Start($"fault-worker-{i}", connectionString, model.BaseUrl, model.ApiKey, 16, WorkerSettings)).ToList();
        try
        {
            // Every worker is up and claiming before the first restart.
            await WaitForClaimsAsync(db, workers);
            for (var restart = 1; restart <= Restarts; restart++)
            {
                var succeeded = await TryScalarAsync(db, "SELECT count(*) FROM llm.job WHERE state = 'succeeded'");
                await postgres.RestartAsync(immediate: restart % 2 == 0);
                // Jobs keep flowing: new rows after each restart, and the drain moves on.
                await UntilAsync(async () => await TryExecAsync(db, $"INSERT INTO reviews (id, body) SELECT g, 'body ' || g FROM generate_series({rows + 1}, {rows + 300}) AS g"));
                rows += 300;
                await UntilAsync(async () => await TryScalarAsync(db, "SELECT count(*) FROM llm.job WHERE state = 'succeeded'") > succeeded);
                AssertAlive(workers);
            }

            // After the last restart, every worker claims again: slower calls keep its jobs visibly running.
            model.Latency = TimeSpan.FromMilliseconds(300);
            await UntilAsync(async () => await TryExecAsync(db, $"INSERT INTO reviews (id, body) SELECT g, 'body ' || g FROM generate_series({rows + 1}, {rows + 400}) AS g"));
            rows += 400;
            await WaitForClaimsAsync(db, workers);
            await UntilAsync(async () => await TryScalarAsync(db, "SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == 2 * rows);
            AssertAlive(workers);
        }
        finally
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
            }
        }

        Assert.Equal(2L * rows, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        Assert.Equal(0L, await db.ScalarAsync<long>("SELECT count(*) FROM reviews WHERE sentiment IS NULL OR body_es IS NULL"));
        await AssertNoJobCalledBeyondItsAttemptsAsync(db, model);
    }

    /// <summary>Each job's model calls (its prompt is unique) against its attempts: at most one more (see the remarks).</summary>
    private static async Task AssertNoJobCalledBeyondItsAttemptsAsync(NpgsqlDataSource db, LocalModelServer model)
    {
        var calls = model.Requests.GroupBy(r => r.LastUserText).ToDictionary(g => g.Key, g => g.Count());
        var attempts = await db.ListAsync<string[]>(
            "SELECT ARRAY[CASE WHEN task LIKE '%:sentiment' THEN 'Sentiment of: ' ELSE 'Give the emotion and translate to Spanish: ' END " +
            "|| 'body ' || (row_key->>'id'), attempt::text] FROM llm.job");
        var over = attempts.Where(a => calls.GetValueOrDefault(a[0]) > int.Parse(a[1], System.Globalization.CultureInfo.InvariantCulture) + 1).Select(a => a[0]).ToList();
        Assert.True(over.Count == 0, $"called more than their attempts allow: {string.Join(", ", over)}");
        Assert.All(attempts, a => Assert.True(calls.GetValueOrDefault(a[0]) >= 1, $"'{a[0]}' was never called"));
    }

    /// <summary>Waits until each worker's id has been seen on a running job.</summary>
    private static async Task WaitForClaimsAsync(NpgsqlDataSource db, List<WorkerProcess> workers)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        await UntilAsync(async () =>
        {
            try
            {
                seen.UnionWith(await db.ListAsync<string>("SELECT DISTINCT locked_by FROM llm.job WHERE state = 'running' AND locked_by IS NOT NULL"));
            }
            catch (NpgsqlException)
            {
                return false;
            }

            AssertAlive(workers);
            return workers.All(w => seen.Contains(w.Id));
        });
    }

    private static void AssertAlive(List<WorkerProcess> workers)
    {
        foreach (var worker in workers)
        {
            Assert.False(worker.Process.HasExited, $"worker {worker.Id} exited with status {(worker.Process.HasExited ? worker.Process.ExitCode : 0)}: {worker.Output}");
        }
    }

    private static async Task<long> TryScalarAsync(NpgsqlDataSource db, string sql)
    {
        try
        {
            return await db.ScalarAsync<long>(sql);
        }
        catch (NpgsqlException)
        {
            return -1;
        }
    }

    private static async Task<bool> TryExecAsync(NpgsqlDataSource db, string sql)
    {
        try
        {
            await db.ExecAsync(sql);
            return true;
        }
        catch (NpgsqlException)
        {
            return false;
        }
    }

    /// <summary>Polls a condition every 20 ms, failing after the test's bound.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within the bound");
            await Task.Delay(20);
        }
    }

    /// <summary>One <c>pgllm worker</c> process, its output kept for the failure message.</summary>
}
