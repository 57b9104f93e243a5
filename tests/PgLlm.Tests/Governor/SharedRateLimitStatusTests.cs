using System.Text.Json;
using PgLlm.Tests.CommandLine;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// <c>pgllm status</c> (text and <c>--json</c>) and <c>pgllm endpoint list</c> show each endpoint's shared rate limits,
/// what the workers were granted in the last minute, and a 429 pause; in 80 columns.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SharedRateLimitStatusTests
{
    private readonly PgLlmFixture _fixture;

    public SharedRateLimitStatusTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task Status_and_the_endpoint_list_show_the_limits_their_use_and_a_pause()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        await sql.ExecAsync("SELECT llm.endpoint_configure('default', 'h1')");
        await sql.ExecAsync("SELECT llm.endpoint_configure('spare', 'h2')");
        // The workers took 12 requests of 600 a minute and 4,200 tokens of 200,000 (with 200 more settled) from default.
        await sql.ExecAsync("SELECT llm.endpoint_take('default', 'requests', 0, 600, 15)");
        await sql.ExecAsync("SELECT llm.endpoint_take('default', 'tokens', 0, 200000, 5000)");
        await sql.ExecAsync("UPDATE llm.endpoint_bucket SET level = burst, updated_at = clock_timestamp()");
        await sql.ExecAsync("SELECT llm.endpoint_take('default', 'requests', 12, 600, 15)");
        await sql.ExecAsync("SELECT llm.endpoint_take('default', 'tokens', 4000, 200000, 5000, 200)");
        await sql.ExecAsync("SELECT llm.endpoint_pause('default', 30)");

        var text = await RunAsync(db, "status");
        var list = await RunAsync(db, "endpoint", "list");
        foreach (var output in new[] { text, list })
        {
            Assert.Contains("  rate limit: 600 requests/min, 12 granted in the last minute", output, StringComparison.Ordinal);
            Assert.Contains("  rate limit: 200,000 tokens/min, 4,200 granted in the last minute", output, StringComparison.Ordinal);
            Assert.Contains("  paused after a 429 until ", output, StringComparison.Ordinal);
            Assert.All(output.Split('\n'), line => Assert.True(line.TrimEnd().Length <= 80, $"wider than 80 columns: {line}"));
        }

        // The endpoint without limits shows none.
        Assert.Equal(2, list.Split('\n').Count(line => line.StartsWith("  rate limit:", StringComparison.Ordinal)));

        using var json = JsonDocument.Parse(await RunAsync(db, "status", "--json"));
        var endpoints = json.RootElement.GetProperty("endpoints").EnumerateArray().ToDictionary(e => e.GetProperty("endpoint").GetString()!);
        var limits = endpoints["default"].GetProperty("rateLimits").EnumerateArray()
            .Select(l => (l.GetProperty("kind").GetString(), l.GetProperty("perMinute").GetInt32(), l.GetProperty("usedLastMinute").GetInt64()))
            .ToList();
        Assert.Equal([("requests", 600, 12L), ("tokens", 200000, 4200L)], limits);
        Assert.Equal(JsonValueKind.String, endpoints["default"].GetProperty("pausedUntil").ValueKind);
        Assert.Empty(endpoints["spare"].GetProperty("rateLimits").EnumerateArray());
        Assert.Equal(JsonValueKind.Null, endpoints["spare"].GetProperty("pausedUntil").ValueKind);
    }

    private async Task<string> RunAsync(TestDatabase db, params string[] args)
    {
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: false);
        Assert.Equal(0, await Ops.RunAsync(console, Ops.Configuration(_fixture), db.ConnectionString, args));
        return writer.ToString();
    }
}
