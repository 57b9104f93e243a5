using PgLlm.Hosting;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using Spectre.Console;

namespace PgLlm.Tests.Operations;

/// <summary>The pgllm commands, run in-process against the test PostgreSQL and the loopback endpoint.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class CommandLineTests
{
    private const string Flaky = "public.flaky:output";
    private readonly PgLlmFixture _fixture;

    public CommandLineTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Migrate_applies_the_scripts_once_then_reports_up_to_date()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture, migrate: false);
        var configuration = Ops.Configuration(_fixture);

        var (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "migrate");
        var (again, secondOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "migrate");

        Assert.Equal(0, exit);
        Assert.All(PgLlmQueueMigrations.All, m => Assert.Contains("applied " + m.Name, output, StringComparison.Ordinal));
        var total = PgLlmFixture.Scripts.Count + PgLlmQueueMigrations.All.Count;
        Assert.Contains($"{total} of {total} scripts applied", output, StringComparison.Ordinal);
        Assert.Equal(0, again);
        Assert.Contains("Up to date", secondOutput, StringComparison.Ordinal);
        Assert.True(await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.task") >= 4);
    }

    [Fact]
    public async Task Migrate_and_script_read_the_generated_scripts_from_a_compiled_assembly()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture, migrate: false);
        // The application's own tables first, as its deployment would.
        var tables = PgLlmFixture.Scripts.Except(PgLlm.Generated.PgLlmScripts.All).ToList();
        await new PgLlmMigrator(db.DataSource, tables).MigrateAsync();
        var assembly = typeof(CommandLineTests).Assembly.Location;
        var folder = Directory.CreateTempSubdirectory("pgllm-script-");
        try
        {
            var (exit, _) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "migrate", "--assembly", assembly);
            var (scriptExit, scriptOutput) = await Ops.RunAsync(Ops.Configuration(_fixture), null, "script", "--assembly", assembly, "--out", folder.FullName);

            Assert.Equal(0, exit);
            Assert.Equal(
                PgLlm.Generated.PgLlmScripts.All.Select(s => s.Name).Order(StringComparer.Ordinal),
                await db.DataSource.ListAsync<string>("SELECT script_name FROM llm.migration WHERE stream LIKE '1000-%' ORDER BY script_name COLLATE \"C\""));
            Assert.Equal(0, scriptExit);
            Assert.Contains($"{PgLlm.Generated.PgLlmScripts.All.Count} scripts", scriptOutput, StringComparison.Ordinal);
            Assert.Empty(PgLlmScriptFolder.Compare(folder.FullName, PgLlm.Generated.PgLlmScripts.All));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task An_assembly_without_generated_scripts_is_a_clear_error()
    {
        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), null, "script", "--assembly", typeof(LocalPostgres).Assembly.Location, "--out", Path.GetTempPath());

        Assert.Equal(1, exit);
        Assert.Contains("has no generated PgLlm scripts", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Worker_until_idle_drains_the_queue()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' || i FROM generate_series(1, 5) AS i");

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "worker", "--until-idle");

        Assert.Equal(0, exit);
        Assert.Contains("Drained: 5 jobs run", output, StringComparison.Ordinal);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
    }

    [Fact]
    public async Task The_worker_command_as_its_own_process_drains_the_queue_with_inline_socket_completions()
    {
        // `pgllm worker` turns on inline socket completions for its process (DedicatedWorkerProcess): the
        // worker's continuations then run on the socket polling threads. Run the real executable, as a
        // deployment would, so that setting is in effect for every model call and statement.
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' || i FROM generate_series(1, 40) AS i");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "PgLlm.Cli.dll"), "worker", "--until-idle", "--concurrency", "8", "--connection", db.ConnectionString })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["PgLlm__BaseUrl"] = _fixture.Model.BaseUrl.ToString();
        start.Environment["PgLlm__ApiKey"] = _fixture.Model.ApiKey;
        start.Environment["PgLlm__Model"] = "test-model";
        start.Environment.Remove(DedicatedWorkerProcess.InlineSocketCompletionsVariable);
        using var process = System.Diagnostics.Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {await output} {await errors}");
        Assert.Contains("Drained: 40 jobs run", await output, StringComparison.Ordinal);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM flaky WHERE output IS NULL"));
        Assert.Equal(40L, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{Flaky}' AND state = 'succeeded'"));
    }

    [Fact]
    public void A_dedicated_worker_process_turns_inline_socket_completions_on_unless_the_environment_decides()
    {
        var environment = new Dictionary<string, string>();
        Assert.True(DedicatedWorkerProcess.Configure(name => environment.GetValueOrDefault(name), (name, value) => environment[name] = value));
        Assert.Equal("1", environment[DedicatedWorkerProcess.InlineSocketCompletionsVariable]);

        // A value the operator set is kept, either way.
        var off = new Dictionary<string, string> { [DedicatedWorkerProcess.InlineSocketCompletionsVariable] = "0" };
        Assert.False(DedicatedWorkerProcess.Configure(name => off.GetValueOrDefault(name), (name, value) => off[name] = value));
        Assert.Equal("0", off[DedicatedWorkerProcess.InlineSocketCompletionsVariable]);
    }

    [Fact]
    public async Task Status_on_a_wide_terminal_shows_states_failures_tokens_and_cost_per_task_in_one_table()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = request => request.UserText.Contains("Echo bad", StringComparison.Ordinal)
            ? ModelReply.Error(400, "the prompt is not allowed")
            : ModelReply.Json(DeterministicModel.Answer(request));
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'good'), (2, 'bad'), (3, 'fine')");
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (4, 'waiting')");
        var input = await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens) FROM llm.job");
        var output = await db.DataSource.ScalarAsync<long>("SELECT sum(output_tokens) FROM llm.job");
        var configuration = Ops.Configuration(_fixture, new Dictionary<string, string?>
        {
            ["PgLlm:Prices:*:InputPerMillion"] = "1000",
            ["PgLlm:Prices:*:OutputPerMillion"] = "2000",
        });

        using var writer = new SynchronizedWriter();
        var exit = await Ops.RunAsync(PgLlm.Tests.CommandLine.CliConsoles.Create(writer, width: 250, terminal: true), configuration, db.ConnectionString, "status");
        var text = string.Join('\n', PgLlm.Tests.CommandLine.CliConsoles.VisibleLines(writer.ToString()));

        // A terminal wide enough for every column shows one table.
        Assert.Equal(0, exit);
        var line = text.Split('\n').Single(l => l.Contains(Flaky, StringComparison.Ordinal) && l.Contains('│'));
        var cells = line.Split('│', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        // task, model, pending, running, succeeded, failed, superseded, skipped, oldest pending, tokens in, tokens out, cost
        Assert.Equal(["1", "0", "2", "1", "0", "0"], cells[2..8]);
        Assert.EndsWith("s", cells[8], StringComparison.Ordinal);
        Assert.Equal(input.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), cells[9]);
        Assert.Equal(output.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), cells[10]);
        Assert.Equal(((input * 1000m + output * 2000m) / 1_000_000m).ToString("0.0000", System.Globalization.CultureInfo.InvariantCulture), cells[11]);
        Assert.Contains("Top failures of public.flaky:output", text, StringComparison.Ordinal);
        Assert.Contains("1 x model endpoint returned HTTP 400", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Status_watch_follows_a_drain_until_the_queue_is_idle()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        using var gate = new ManualResetEventSlim();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        // The model holds every answer until the watch has shown the drain in progress.
        _fixture.Model.Responder = request =>
        {
            gate.Wait(TimeSpan.FromSeconds(30));
            return ModelReply.Json(DeterministicModel.Answer(request));
        };
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' || i FROM generate_series(1, 20) AS i");
        var drain = Ops.Worker(db.DataSource, Ops.Options(_fixture, o => o.Worker.Concurrency = 2)).RunUntilIdleAsync(timeout.Token);
        while (_fixture.Model.RequestCount == 0)
        {
            await Task.Delay(20, timeout.Token);
        }

        using var writer = new SynchronizedWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 250;
        var watch = Ops.RunAsync(console, Ops.Configuration(_fixture), db.ConnectionString, "status", "--watch", "--exit-when-idle", "--interval", "0.2");
        while (!writer.ToString().Contains("running", StringComparison.Ordinal))
        {
            await Task.Delay(20, timeout.Token);
        }

        gate.Set();
        await drain;
        var exit = await watch;
        var output = writer.ToString();

        Assert.Equal(0, exit);
        // Not a terminal: a plain line per task whenever its counts change, then the final status as plain blocks.
        Assert.Matches(@"public\.flaky:output 1[89] pending, [12] running, 0 failed: 0%", output);
        Assert.Contains("public.flaky:output 0 pending, 0 running, 0 failed: 100%", output, StringComparison.Ordinal);
        var final = PgLlm.Tests.CommandLine.CliConsoles.Block(output, Flaky);
        Assert.Equal(("0", "0", "20"), (final["pending"], final["running"], final["succeeded"]));
    }

    [Fact]
    public async Task Retry_redrives_failed_jobs_by_task_and_by_id_and_rejects_unknown_ones()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = _ => ModelReply.Error(400, "no");
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b'), (3, 'c')");
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        var configuration = Ops.Configuration(_fixture);
        var firstId = await db.DataSource.ScalarAsync<long>("SELECT min(id) FROM llm.job");

        var (unknownTask, unknownTaskOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "retry", "--task", "public.nope:x");
        var (unknownJob, unknownJobOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "retry", "--job", "987654");
        var (none, _) = await Ops.RunAsync(configuration, db.ConnectionString, "retry");
        var (byId, byIdOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "retry", "--job", firstId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var (notFailed, notFailedOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "retry", "--job", firstId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var (byTask, byTaskOutput) = await Ops.RunAsync(configuration, db.ConnectionString, "retry", "--task", Flaky);

        Assert.Equal(1, unknownTask);
        Assert.Contains("unknown task 'public.nope:x'", unknownTaskOutput, StringComparison.Ordinal);
        Assert.Equal(1, unknownJob);
        Assert.Contains("there is no job 987654", unknownJobOutput, StringComparison.Ordinal);
        Assert.NotEqual(0, none);
        Assert.Equal(0, byId);
        Assert.Contains("Re-drove 1 failed jobs", byIdOutput, StringComparison.Ordinal);
        Assert.Equal(1, notFailed);
        Assert.Contains("is pending, not failed", notFailedOutput, StringComparison.Ordinal);
        Assert.Equal(0, byTask);
        Assert.Contains("Re-drove 2 failed jobs", byTaskOutput, StringComparison.Ordinal);
        Assert.Equal(3L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending'"));
    }

    [Fact]
    public async Task A_malformed_or_missing_connection_string_is_a_clear_error()
    {
        var (malformed, malformedOutput) = await Ops.RunAsync(Ops.Configuration(_fixture), "this is not a connection string", "status");
        var (missing, missingOutput) = await Ops.RunAsync(Ops.Configuration(_fixture), null, "status");

        Assert.Equal(1, malformed);
        Assert.Contains("the connection string is not valid", malformedOutput, StringComparison.Ordinal);
        Assert.Equal(1, missing);
        Assert.Contains("no connection string", missingOutput, StringComparison.Ordinal);
        Assert.Contains("PGLLM_CONNECTION", missingOutput, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unreachable_database_is_a_clear_error()
    {
        var port = Ops.FreePort();

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), $"Host=127.0.0.1;Port={port};Username=x;Timeout=5", "status");

        Assert.Equal(1, exit);
        Assert.Contains($"cannot connect to PostgreSQL at 127.0.0.1:{port}", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_database_without_the_schema_says_to_migrate()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture, migrate: false);

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "status");

        Assert.Equal(1, exit);
        Assert.Contains("run 'pgllm migrate' first", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_worker_refuses_to_start_against_an_unreachable_endpoint_and_claims_nothing()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        var configuration = Ops.Configuration(_fixture, new Dictionary<string, string?> { ["PgLlm:BaseUrl"] = $"http://127.0.0.1:{Ops.FreePort()}/v1" });

        var (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "worker", "--until-idle");

        Assert.Equal(1, exit);
        Assert.Contains("cannot reach the model endpoint http://127.0.0.1:", output, StringComparison.Ordinal);
        Assert.Equal(0, await db.DataSource.ScalarAsync<int>("SELECT attempt FROM llm.job"));
    }
}
