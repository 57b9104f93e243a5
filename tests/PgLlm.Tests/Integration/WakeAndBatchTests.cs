using Npgsql;

namespace PgLlm.Tests.Integration;

/// <summary>
/// The throughput mechanisms keep the queue's guarantees: batched write-backs stay independent per
/// job, and enqueuers notify exactly when a worker sleeps.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class WakeAndBatchTests
{
    /// <summary>The middle answer breaks a CHECK constraint the test adds.</summary>
    private static readonly string[] Answers = ["{\"output\":\"one\"}", "{\"output\":\"bad\"}", "{\"output\":\"three\"}"];

    private readonly PgLlmFixture _fixture;

    public WakeAndBatchTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task One_failing_job_in_a_batched_write_back_undoes_nothing_of_the_others()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("ALTER TABLE flaky ADD CONSTRAINT output_not_bad CHECK (output <> 'bad')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c')");
        var claimed = await db.ListAsync<string[]>(
            "SELECT ARRAY[id::text, task, attempt::text, inputs_hash] FROM llm.claim_with_inputs('test', 10, 60) ORDER BY id");
        Assert.Equal(3, claimed.Count);

        await using var command = db.CreateCommand(
            "SELECT job_id, state, error_code FROM llm.complete_batch($1, $2, $3, $4, $5::jsonb[], NULL, NULL) ORDER BY job_id");
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => c[1]).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => long.Parse(c[0], System.Globalization.CultureInfo.InvariantCulture)).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => int.Parse(c[2], System.Globalization.CultureInfo.InvariantCulture)).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = claimed.Select(c => c[3]).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = Answers });
        var outcomes = new List<(long Id, string? State, string? Code)>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                outcomes.Add((reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2)));
            }
        }

        Assert.Equal(["succeeded", null, "succeeded"], outcomes.Select(o => o.State));
        Assert.Equal("23514", outcomes[1].Code);
        Assert.Equal(["one", null, "three"], await db.ListAsync<string?>("SELECT output FROM flaky ORDER BY id"));
        Assert.Equal(["succeeded", "running", "succeeded"], await db.ListAsync<string>("SELECT state FROM llm.job ORDER BY id"));
    }

    [Fact]
    public async Task Enqueuers_notify_only_while_a_worker_sleeps()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await using var listener = await db.OpenConnectionAsync();
        await using (var listen = new NpgsqlCommand("LISTEN " + PgLlm.Worker.PgLlmWorker.JobsChannel, listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'busy worker')");
        Assert.False(listener.Wait(300));

        await db.ExecAsync("SELECT llm.worker_sleeps('test-worker')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (2, 'sleeping worker')");
        Assert.True(listener.Wait(10_000));

        await db.ExecAsync("SELECT llm.worker_wakes('test-worker')");
        await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (3, 'busy again')");
        Assert.False(listener.Wait(300));
    }

    [Fact]
    public async Task A_worker_about_to_sleep_sees_an_enqueuing_transaction_that_has_not_committed()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        Assert.True(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));

        await using var user = await db.OpenConnectionAsync();
        await using var transaction = await user.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand("INSERT INTO flaky (id, input) VALUES (1, 'slow transaction')", user, transaction))
        {
            await insert.ExecuteNonQueryAsync();
        }

        // The transaction enqueued without seeing a sleeping worker: the worker must not sleep yet.
        Assert.False(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));
        await transaction.CommitAsync();
        Assert.True(await db.ScalarAsync<bool>("SELECT llm.enqueuers_settled()"));
        Assert.Equal(1L, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));
    }
}
