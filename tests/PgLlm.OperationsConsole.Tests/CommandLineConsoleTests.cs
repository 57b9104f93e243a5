using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using PgLlm.Cli;
using Spectre.Console.Testing;

namespace PgLlm.OperationsConsole.Tests;

/// <summary><c>pgllm console</c>: serves the console on 127.0.0.1, prints the URL, stops on cancel; a login that may not act as the role gets one line.</summary>
[Collection(ConsoleGroup.Name)]
public sealed partial class CommandLineConsoleTests(ConsoleFixture fixture)
{
    [Fact]
    public async Task Pgllm_console_serves_the_console_on_loopback_and_prints_its_url()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        var console = new TestConsole();
        var error = new StringWriter();
        var commandLine = new PgLlmCommandLine(console: console, configuration: new ConfigurationBuilder().Build(), error: error);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var run = commandLine.InvokeAsync(["console", "--read-only", "--connection", db.ConsoleConnectionString], stop.Token);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        Match url;
        while (!(url = Url().Match(console.Output)).Success)
        {
            Assert.False(run.IsCompleted, "the command ended: " + error);
            Assert.True(DateTime.UtcNow < deadline, "no URL printed: " + console.Output);
            await Task.Delay(20);
        }

        Assert.StartsWith("http://127.0.0.1:", url.Groups[1].Value, StringComparison.Ordinal);
        using var http = new HttpClient();
        var page = await http.GetStringAsync(new Uri(url.Groups[1].Value));
        Assert.Contains("public.tickets:ticket_category", page, StringComparison.Ordinal);
        Assert.Contains("data-role=\"read-only\"", page, StringComparison.Ordinal);

        await stop.CancelAsync();
        Assert.Equal(PgLlmCommandLine.ExitInterrupted, await run);
    }

    [Fact]
    public async Task A_login_that_may_not_act_as_pgllm_console_gets_one_line_and_exit_code_1()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync("DO $$ BEGIN CREATE ROLE pgllm_console_outsider LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
        var outsider = new Npgsql.NpgsqlConnectionStringBuilder(db.ConsoleConnectionString) { Username = "pgllm_console_outsider" }.ConnectionString;
        var error = new StringWriter();
        var commandLine = new PgLlmCommandLine(console: new TestConsole(), configuration: new ConfigurationBuilder().Build(), error: error);

        Assert.Equal(PgLlmCommandLine.ExitError, await commandLine.InvokeAsync(["console", "--connection", outsider]));
        var line = Assert.Single(error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("GRANT pgllm_console TO pgllm_console_outsider", line, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"PgLlm console: (http://\S+/)")]
    private static partial Regex Url();
}
