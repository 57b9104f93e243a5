using Npgsql;
using PgLlm.Local;
using PgLlm.Failures;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// The in-database worker stores no secret: an endpoint's error that echoes the API key (OpenAI's 401 does) is
/// redacted before it reaches llm.job, by the .NET worker's SecretRedactor rules.
/// </summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseRedactionTests
{
    private readonly InDatabaseFixture _fixture;

    public InDatabaseRedactionTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [RealHttpFact]
    public async Task A_401_that_echoes_the_key_is_stored_redacted_after_one_call_through_the_http_extension()
    {
        var key = "sk-proj-" + Guid.NewGuid().ToString("N");
        await using var model = await LocalModelServer.StartAsync(new LocalModelServerOptions
        {
            ApiKey = key,
            // OpenAI's answer to a wrong key: the key, echoed in the message.
            Responder = _ => ModelReply.Error(401, $"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys.")
                with { ErrorType = "invalid_request_error" },
        });
        await using var db = await _fixture.CreateDatabaseAsync(configure: false, realHttp: true);
        await PgLlmInDatabase.ConfigureAsync(db, model.BaseUrl.ToString(), key, "test-model");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");

        // A wrong key cannot succeed on a retry: one call, and the endpoint stops; the job waits, spending nothing.
        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.Equal(1, model.RequestCount);
        Assert.Equal(
            "unauthorized: HTTP 401: Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            await db.ScalarAsync<string>("SELECT reason FROM llm.endpoint_state WHERE endpoint = 'in-database' AND state = 'stopped'"));
        Assert.Equal("pending", await db.ScalarAsync<string>("SELECT state FROM llm.job"));

        // With the governor off, the job fails at once with the error redacted.
        await db.ExecAsync("UPDATE llm.worker_settings SET governor = false");
        Assert.Equal(1, await InDatabaseFixture.RunWorkerAsync(db));
        Assert.Equal(2, model.RequestCount);
        Assert.Equal("failed", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(
            "model endpoint returned HTTP 401: Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            await db.ScalarAsync<string>("SELECT last_error FROM llm.job"));
        Assert.Equal("permanent", await db.ScalarAsync<string>("SELECT errors->0->>'kind' FROM llm.job"));
        // Nowhere in the queue: not in the job's row (errors included), not in what application roles see, not in the endpoint's state.
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job AS j WHERE strpos(j::text, $1) > 0", key));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job_status AS s WHERE strpos(s::text, $1) > 0", key));
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.endpoint_state AS s WHERE strpos(s::text, $1) > 0", key));
        Assert.Equal(1, await db.ScalarAsync<long>("SELECT count(*) FROM llm.job_status AS s WHERE strpos(s::text, '[redacted]') > 0"));
    }

    [Theory]
    [InlineData("Incorrect API key provided: my-secret-key-123.")]
    [InlineData("Incorrect API key provided: sk-abcdefghijklmnopqrstuvwx")]
    [InlineData("upstream said: Authorization: Bearer abc.def-ghi_jkl~mno== rejected")]
    [InlineData("the bearer of bad news; bearer token1234")]
    [InlineData("sk-short and sk-0123456789abcdef0123 and xsk-0123456789abcdef0123")]
    [InlineData("my-secret-key-123my-secret-key-123 twice, and my-secret-key-12 almost")]
    [InlineData("nothing secret here")]
    public async Task The_in_database_redaction_masks_what_SecretRedactor_masks(string text)
    {
        const string key = "my-secret-key-123";
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);

        Assert.Equal(new SecretRedactor(key).Redact(text), await db.ScalarAsync<string>("SELECT llm.redact_secrets($1, $2)", text, key));
        // A key too short to search for verbatim is left to the patterns, in both.
        Assert.Equal(new SecretRedactor("short").Redact(text), await db.ScalarAsync<string>("SELECT llm.redact_secrets($1, 'short')", text));
    }
}
