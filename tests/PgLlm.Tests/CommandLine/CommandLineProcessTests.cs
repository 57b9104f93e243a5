using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Npgsql;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.CommandLine;

/// <summary>The <c>pgllm</c> tool as its own process: Ctrl+C (SIGINT) exits 130, and <c>pgllm dev</c>.</summary>
[Collection(IntegrationGroup.Name)]
public sealed partial class CommandLineProcessTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(1);
    private readonly PgLlmFixture _fixture;

    public CommandLineProcessTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Responder = null;
        fixture.Model.Latency = TimeSpan.Zero;
    }

    [Fact]
    public async Task Status_watch_exits_130_on_ctrl_c()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        await using var process = CliProcess.Start(["status", "--watch", "--interval", "0.2", "--connection", db.ConnectionString]);
        await process.WaitForOutputAsync(o => o.Contains("public.flaky:output 2 pending, 0 running, 0 failed: 0%", StringComparison.Ordinal), Patience);

        process.Interrupt();
        var exit = await process.WaitForExitAsync(Patience);

        Assert.True(exit == 130, $"exit {exit}: {process.Output} {process.Errors}");
        // The last status is still printed, as plain text (the output is a pipe).
        Assert.Contains("public.flaky:output\n  model", process.Output, StringComparison.Ordinal);
        Assert.Equal(string.Empty, process.Errors);
    }

    [Fact]
    public async Task The_worker_exits_130_on_ctrl_c()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await using var process = CliProcess.Start(["worker", "--connection", db.ConnectionString], ModelEnvironment());
        await process.WaitForOutputAsync(o => o.Contains("draining the queue; Ctrl+C stops it", StringComparison.Ordinal), Patience);

        process.Interrupt();
        var exit = await process.WaitForExitAsync(Patience);

        Assert.True(exit == 130, $"exit {exit}: {process.Output} {process.Errors}");
    }

    [Fact]
    public async Task The_worker_stopped_by_sigterm_exits_0_as_a_service_manager_expects()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await using var process = CliProcess.Start(["worker", "--connection", db.ConnectionString], ModelEnvironment());
        await process.WaitForOutputAsync(o => o.Contains("draining the queue; Ctrl+C stops it", StringComparison.Ordinal), Patience);

        process.Terminate();
        var exit = await process.WaitForExitAsync(Patience);

        Assert.True(exit == 0, $"exit {exit}: {process.Output} {process.Errors}");
        // Also when the signal comes while the host is still starting: a stop, never a stack trace.
        Assert.DoesNotContain("   at ", process.Output + process.Errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dev_prints_how_to_connect_and_ctrl_c_stops_the_database_and_the_model()
    {
        await using var process = CliProcess.Start(["dev"]);
        var output = await process.WaitForOutputAsync(o => o.Contains("Ready.", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        var connectionString = Setting(output, "PGLLM_CONNECTION").Trim('"');
        var baseUrl = new Uri(Setting(output, "PGLLM_BASE_URL"));
        var apiKey = Setting(output, "PGLLM_API_KEY");
        Assert.Equal("pgllm-local-deterministic", Setting(output, "PGLLM_MODEL"));
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        Assert.Contains($"PostgreSQL    postgres://{builder.Username}@{builder.Host}:{builder.Port}/{builder.Database}\n", output, StringComparison.Ordinal);
        Assert.Contains($"              {connectionString}\n", output, StringComparison.Ordinal);
        Assert.Contains($"Model         {baseUrl}", output, StringComparison.Ordinal);

        await using (var dataSource = NpgsqlDataSource.Create(connectionString))
        {
            // Migrated: the queue's schema is there.
            Assert.True(await dataSource.ScalarAsync<bool>("SELECT to_regclass('llm.job') IS NOT NULL"));
        }

        using var http = new HttpClient();
        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri(baseUrl, "models")))
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            using var models = await http.SendAsync(request);
            Assert.True(models.IsSuccessStatusCode, $"GET models: {(int)models.StatusCode}");
        }

        process.Interrupt();
        var exit = await process.WaitForExitAsync(Patience);

        Assert.True(exit == 130, $"exit {exit}: {process.Output} {process.Errors}");
        NpgsqlConnection.ClearAllPools();
        var closed = builder.ConnectionString + ";Timeout=3;Pooling=false";
        await using (var connection = new NpgsqlConnection(closed))
        {
            await Assert.ThrowsAnyAsync<NpgsqlException>(() => connection.OpenAsync());
        }

        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync(new Uri(baseUrl, "models")));
    }

    [Fact]
    public async Task Dev_with_the_worker_fills_the_rows_of_tables_migrated_into_it()
    {
        await using var process = CliProcess.Start(["dev", "--worker"]);
        var output = await process.WaitForOutputAsync(o => o.Contains("draining the queue", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        var connectionString = Setting(output, "PGLLM_CONNECTION").Trim('"');

        await using (var dataSource = NpgsqlDataSource.Create(connectionString))
        {
            // The application migrates its tables and tasks into the dev database, then inserts a row.
            await new PgLlmMigrator(dataSource, PgLlmFixture.Scripts).MigrateAsync();
            await dataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'hello')");
            var deadline = DateTime.UtcNow + Patience;
            while (await dataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NOT NULL") == 0)
            {
                Assert.True(DateTime.UtcNow < deadline, $"the dev worker filled nothing. stdout:\n{process.Output}\nstderr:\n{process.Errors}");
                await Task.Delay(50);
            }
        }

        process.Interrupt();
        var exit = await process.WaitForExitAsync(Patience);

        Assert.True(exit == 130, $"exit {exit}: {process.Output} {process.Errors}");
    }

    private Dictionary<string, string> ModelEnvironment() => new()
    {
        ["PGLLM_BASE_URL"] = _fixture.Model.BaseUrl.ToString(),
        ["PGLLM_API_KEY"] = _fixture.Model.ApiKey,
        ["PGLLM_MODEL"] = "test-model",
    };

    /// <summary>The value of a <c>NAME=value</c> line that <c>pgllm dev</c> printed.</summary>
    private static string Setting(string output, string name)
    {
        var match = Regex.Match(output, "^" + name + "=(.+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"no {name}= line in:\n{output}");
        return match.Groups[1].Value;
    }
}
