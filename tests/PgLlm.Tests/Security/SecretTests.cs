using PgLlm.Failures;
using PgLlm.Local;
using PgLlm.Worker;

namespace PgLlm.Tests.Security;

/// <summary>The API key lives only in the worker's memory: not in scripts, functions, the queue, errors or logs.</summary>
[Collection(SecurityGroup.Name)]
public sealed class SecretTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly SecurityFixture _fixture;

    public SecretTests(SecurityFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task An_endpoint_that_echoes_the_key_in_its_errors_leaves_no_trace_of_it_in_the_queue_or_the_logs()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var key = _fixture.Model.ApiKey;
        var calls = 0;
        _fixture.Model.Responder = _ => Interlocked.Increment(ref calls) switch
        {
            1 => ModelReply.Error(500, $"upstream failed for request with Authorization: Bearer {key}"),
            // An answer is quoted in the error when it is not valid JSON.
            2 => ModelReply.Json($"I cannot answer. Your key is {key}; header Authorization: Bearer {key}"),
            // A 401 would stop the endpoint (see the governor tests); a 404 fails the job, its message stored.
            _ => ModelReply.Error(404, $"The model does not exist for the key {key}. Find your key at https://example.invalid/keys"),
        };
        await db.App.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'x')");
        var logger = new CapturingLogger<PgLlmWorker>();

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker, logger: logger).RunUntilIdleAsync(timeout.Token);

        Assert.Equal(3, calls);
        Assert.Equal("failed", await db.Superuser.ScalarAsync<string>("SELECT state FROM llm.job"));
        var stored = await db.Superuser.ScalarAsync<string>("SELECT errors::text || last_error FROM llm.job");
        Assert.Contains("HTTP 500", stored, StringComparison.Ordinal);
        Assert.Contains("HTTP 404", stored, StringComparison.Ordinal);
        Assert.Contains("I cannot answer. Your key is [redacted]; header Authorization: Bearer [redacted]", stored, StringComparison.Ordinal);
        Assert.Contains(SecretRedactor.Mask, stored, StringComparison.Ordinal);
        Assert.DoesNotContain(key, stored, StringComparison.Ordinal);
        Assert.Equal(3, logger.Messages.Count(m => m.Contains("attempt", StringComparison.Ordinal) && m.Contains("failed", StringComparison.Ordinal)));
        Assert.DoesNotContain(logger.Messages, m => m.Contains(key, StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_key_is_in_no_script_function_setting_or_queue_row()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        var key = _fixture.Model.ApiKey;
        await db.App.ExecAsync("INSERT INTO reviews (body) VALUES ('I love it')");

        using var timeout = new CancellationTokenSource(Bound);
        await _fixture.CreateWorker(db.Worker).RunUntilIdleAsync(timeout.Token);

        // The endpoint checks the key: answered jobs prove it was sent.
        Assert.Equal(2L, await db.Superuser.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'"));
        Assert.DoesNotContain(Integration.PgLlmFixture.Scripts, s => s.Sql.Contains(key, StringComparison.Ordinal));
        var everywhere = await db.Superuser.ScalarAsync<string>(
            "SELECT concat_ws('|', (SELECT string_agg(prosrc || coalesce(array_to_string(proconfig, ','), ''), '') FROM pg_proc), " +
            "(SELECT string_agg(j::text, '') FROM llm.job AS j), (SELECT string_agg(t::text, '') FROM llm.task AS t), " +
            "(SELECT string_agg(array_to_string(setconfig, ','), '') FROM pg_db_role_setting), " +
            "(SELECT string_agg(name || '=' || setting, ',') FROM pg_settings))");
        Assert.True(everywhere.Length > 10_000);
        Assert.DoesNotContain(key, everywhere, StringComparison.Ordinal);
    }
}
