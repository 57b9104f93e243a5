using System.Globalization;
using System.Text.Json;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.CommandLine;

/// <summary>
/// What <c>pgllm</c> prints, and where: <c>status</c> at 80 columns, piped and as JSON, <c>--watch</c> at 80
/// columns, errors as one line on stderr, the exit codes of a failed drain and of a usage error.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class CommandLineOutputTests
{
    private const string Flaky = "public.flaky:output";
    private readonly PgLlmFixture _fixture;

    public CommandLineOutputTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Status_on_an_80_column_terminal_is_one_block_per_task_with_every_figure_whole()
    {
        await using var db = await SeedAsync();
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: true);

        var exit = await Ops.RunAsync(console, PricedConfiguration(), db.ConnectionString, "status");

        Assert.Equal(0, exit);
        var output = writer.ToString();
        Assert.All(CliConsoles.VisibleLines(output), line => Assert.True(line.Length <= 80, $"wider than 80 columns: '{line}'"));
        Assert.DoesNotContain('…', output);
        Assert.DoesNotContain('│', output);
        await AssertFiguresAsync(db, CliConsoles.Block(output, Flaky));
        Assert.Contains("Top failures of public.flaky:output", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_piped_from_the_tool_is_plain_text_one_block_per_task()
    {
        await using var db = await SeedAsync();
        await using var process = CliProcess.Start(["status", "--connection", db.ConnectionString], new Dictionary<string, string>
        {
            ["PgLlm__Prices__*__InputPerMillion"] = "1000",
            ["PgLlm__Prices__*__OutputPerMillion"] = "2000",
        });

        var exit = await process.WaitForExitAsync(TimeSpan.FromMinutes(1));

        Assert.True(exit == 0, $"exit {exit}: {process.Output} {process.Errors}");
        Assert.Equal(string.Empty, process.Errors);
        Assert.DoesNotContain('\u001b', process.Output);
        Assert.DoesNotContain('│', process.Output);
        Assert.DoesNotContain('…', process.Output);
        await AssertFiguresAsync(db, CliConsoles.Block(process.Output, Flaky));
        Assert.Contains("  1 x model endpoint returned HTTP 400", process.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_json_gives_the_same_figures_under_stable_names()
    {
        await using var db = await SeedAsync();
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: true);

        var exit = await Ops.RunAsync(console, PricedConfiguration(), db.ConnectionString, "status", "--json");

        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(writer.ToString());
        var tasks = json.RootElement.GetProperty("tasks").EnumerateArray().ToList();
        Assert.Equal(await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.task"), tasks.Count);
        var flaky = tasks.Single(t => t.GetProperty("task").GetString() == Flaky);
        Assert.Equal(JsonValueKind.Null, flaky.GetProperty("model").ValueKind);
        Assert.Equal(1, flaky.GetProperty("pending").GetInt64());
        Assert.Equal(0, flaky.GetProperty("running").GetInt64());
        Assert.Equal(2, flaky.GetProperty("succeeded").GetInt64());
        Assert.Equal(1, flaky.GetProperty("failed").GetInt64());
        Assert.Equal(0, flaky.GetProperty("superseded").GetInt64());
        Assert.Equal(0, flaky.GetProperty("skipped").GetInt64());
        Assert.True(flaky.GetProperty("oldestPendingSeconds").GetDouble() >= 0);
        var input = await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens) FROM llm.job");
        var output = await db.DataSource.ScalarAsync<long>("SELECT sum(output_tokens) FROM llm.job");
        Assert.Equal(input, flaky.GetProperty("inputTokens").GetInt64());
        Assert.Equal(output, flaky.GetProperty("outputTokens").GetInt64());
        Assert.Equal((input * 1000m + output * 2000m) / 1_000_000m, flaky.GetProperty("estimatedCost").GetDecimal());
        var failure = Assert.Single(flaky.GetProperty("topFailures").EnumerateArray());
        Assert.StartsWith("model endpoint returned HTTP 400", failure.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, failure.GetProperty("count").GetInt64());
        Assert.Equal(1, flaky.GetProperty("editedCells").GetInt64());
        Assert.Equal(1, tasks.Sum(t => t.GetProperty("editedCells").GetInt64()));
    }

    [Fact]
    public async Task Status_watch_on_an_80_column_terminal_keeps_its_bar_and_counts()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' || i FROM generate_series(1, 12) AS i");
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: true, interactive: true);

        var watch = Ops.RunAsync(console, Ops.Configuration(_fixture), db.ConnectionString, "status", "--watch", "--exit-when-idle", "--interval", "0.2");
        while (!writer.ToString().Contains("12 pending", StringComparison.Ordinal))
        {
            Assert.False(watch.IsCompleted, writer.ToString());
            await Task.Delay(20, timeout.Token);
        }

        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync(timeout.Token);
        var exit = await watch;
        var lines = CliConsoles.VisibleLines(writer.ToString());

        Assert.Equal(0, exit);
        Assert.All(lines, line => Assert.True(line.Length <= 80, $"wider than 80 columns: '{line}'"));
        // Under the task's name, its bar, percentage and counts share a line at 80 columns: first empty, at last full.
        var bars = lines.Select((line, i) => (line, i)).Where(l => l.line.TrimEnd() == Flaky && l.i + 1 < lines.Length).Select(l => lines[l.i + 1]).Where(next => next.Contains('━')).ToList();
        Assert.True(bars.Count >= 2, writer.ToString());
        Assert.All(bars, bar => Assert.Contains(new string('━', 40), bar, StringComparison.Ordinal));
        Assert.EndsWith("   0%  12 pending, 0 running, 0 failed", bars[0].TrimEnd(), StringComparison.Ordinal);
        Assert.EndsWith(" 100%  0 pending, 0 running, 0 failed", bars[^1].TrimEnd(), StringComparison.Ordinal);
        Assert.Equal("12", CliConsoles.Block(writer.ToString(), Flaky)["succeeded"]);
    }

    [Fact]
    public async Task Errors_go_to_stderr_as_one_line_whatever_their_length()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var port = Ops.FreePort();
        await using var unknownTask = CliProcess.Start(["backfill", "--task", "public.nope:x", "--connection", db.ConnectionString]);
        await using var unreachable = CliProcess.Start(["status", "--connection", $"Host=127.0.0.1;Port={port};Username=x;Timeout=5"]);
        await using var usage = CliProcess.Start(["status", "--interval", "0"]);
        await using var unknown = CliProcess.Start(["statsu"]);

        var unknownTaskExit = await unknownTask.WaitForExitAsync(TimeSpan.FromMinutes(1));
        var unreachableExit = await unreachable.WaitForExitAsync(TimeSpan.FromMinutes(1));
        var usageExit = await usage.WaitForExitAsync(TimeSpan.FromMinutes(1));
        var unknownExit = await unknown.WaitForExitAsync(TimeSpan.FromMinutes(1));

        // Far wider than 80 columns (it lists every known task), and still one line.
        Assert.Equal(1, unknownTaskExit);
        Assert.Equal(string.Empty, unknownTask.Output);
        var known = Assert.Single(unknownTask.Errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: unknown task 'public.nope:x'. Known tasks: ", known, StringComparison.Ordinal);
        Assert.Contains(Flaky, known, StringComparison.Ordinal);
        Assert.True(known.Length > 160, known);
        Assert.Equal(1, unreachableExit);
        Assert.Equal(string.Empty, unreachable.Output);
        var line = Assert.Single(unreachable.Errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"error: cannot connect to PostgreSQL at 127.0.0.1:{port}: ", line, StringComparison.Ordinal);
        Assert.Equal(2, usageExit);
        Assert.Equal(string.Empty, usage.Output);
        Assert.Equal(
            ["error: --interval must be between 0 and 3600 seconds.", "Run 'pgllm status --help' for usage."],
            usage.Errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(2, unknownExit);
        Assert.StartsWith("error: ", unknown.Errors, StringComparison.Ordinal);
        Assert.Contains("statsu", unknown.Errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Worker_until_idle_names_every_failed_job_and_exits_3()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = request => request.UserText.Contains("Echo bad", StringComparison.Ordinal)
            ? ModelReply.Error(400, "the prompt is not allowed")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'good'), (2, 'bad'), (3, 'fine'), (4, 'bad too')");

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "worker", "--until-idle");

        Assert.Equal(3, exit);
        var failed = await db.DataSource.ListAsync<long>("SELECT id FROM llm.job WHERE state = 'failed' ORDER BY id");
        Assert.Equal(2, failed.Count);
        foreach (var id in failed)
        {
            Assert.Contains($"error: job {id} of {Flaky} failed: model endpoint returned HTTP 400", output, StringComparison.Ordinal);
        }

        Assert.Contains("Drained: 4 jobs run, 2 failed", output, StringComparison.Ordinal);
        Assert.Equal(2L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NOT NULL"));

        // A second drain finds nothing new: its run ended no job failed, so it exits 0.
        var (again, againOutput) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "worker", "--until-idle");
        Assert.Equal(0, again);
        Assert.Contains("Drained: 0 jobs run, 0 failed", againOutput, StringComparison.Ordinal);
    }

    /// <summary>A database with the flaky task's jobs: two succeeded, one failed (HTTP 400), one pending.</summary>
    private async Task<TestDatabase> SeedAsync()
    {
        var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = request => request.UserText.Contains("Echo bad", StringComparison.Ordinal)
            ? ModelReply.Error(400, "the prompt is not allowed")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'good'), (2, 'bad'), (3, 'fine')");
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (4, 'waiting')");
        // A person corrects one answer: an edited cell the task's answers keep.
        await db.DataSource.ExecAsync("UPDATE flaky SET output = 'corrected by hand' WHERE id = 1");
        return db;
    }

    private Microsoft.Extensions.Configuration.IConfiguration PricedConfiguration() => Ops.Configuration(_fixture, new Dictionary<string, string?>
    {
        ["PgLlm:Prices:*:InputPerMillion"] = "1000",
        ["PgLlm:Prices:*:OutputPerMillion"] = "2000",
    });

    private static async Task AssertFiguresAsync(TestDatabase db, Dictionary<string, string> figures)
    {
        var input = await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens) FROM llm.job");
        var output = await db.DataSource.ScalarAsync<long>("SELECT sum(output_tokens) FROM llm.job");
        Assert.Equal("(default)", figures["model"]);
        Assert.Equal("1", figures["pending"]);
        Assert.Equal("0", figures["running"]);
        Assert.Equal("2", figures["succeeded"]);
        Assert.Equal("1", figures["failed"]);
        Assert.Equal("0", figures["superseded"]);
        Assert.Equal("0", figures["skipped"]);
        Assert.EndsWith("s", figures["oldest pending"], StringComparison.Ordinal);
        Assert.Equal(input.ToString("N0", CultureInfo.InvariantCulture), figures["tokens in"]);
        Assert.Equal(output.ToString("N0", CultureInfo.InvariantCulture), figures["tokens out"]);
        Assert.Equal(((input * 1000m + output * 2000m) / 1_000_000m).ToString("0.0000", CultureInfo.InvariantCulture), figures["cost"]);
        Assert.Equal("1", figures["edited"]);
    }
}
