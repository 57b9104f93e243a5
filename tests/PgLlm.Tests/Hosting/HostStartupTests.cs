using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Hosting;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Hosting;

/// <summary>
/// A hosted app (<c>AddPgLlm</c> + <c>RunAsync</c>) says what it serves at start-up, logs its successes and a
/// periodic summary, and ends a start that cannot work with one line and exit code 1. The failures run the
/// example in <c>--serve</c> mode as a child process: the exit code and the whole output are the user's.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed partial class HostStartupTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private readonly PgLlmFixture _fixture;

    public HostStartupTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Responder = null;
        fixture.Model.Latency = TimeSpan.Zero;
    }

    public static TheoryData<string, string> BadSettings => new()
    {
        { "garbage", "The connection string (PGLLM_CONNECTION or PgLlm:ConnectionString) is not valid" },
        { "postgres://app:hunter2@127.0.0.1:nope/reviews", "The connection URL (PGLLM_CONNECTION or PgLlm:ConnectionString) is not valid: the port 'nope' is not a number" },
        { "", "PgLlm needs a connection string" },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public async Task A_bad_connection_string_is_one_line_and_exit_code_1(string connection, string expected)
    {
        var run = await RunExampleAsync(connection);

        AssertOneLineFailure(run, expected);
    }

    [Fact]
    public async Task An_unreachable_database_is_one_line_and_exit_code_1()
    {
        var port = Ops.FreePort();

        var run = await RunExampleAsync($"postgres://app:hunter2@127.0.0.1:{port}/reviews");

        AssertOneLineFailure(run, $"PgLlm cannot reach PostgreSQL at 127.0.0.1:{port}/reviews as app: Connection refused");
    }

    [Fact]
    public async Task A_bad_endpoint_url_is_one_line_and_exit_code_1()
    {
        var run = await RunExampleAsync($"Host=127.0.0.1;Port={Ops.FreePort()};Username=app;Password=hunter2", baseUrl: "not a url");

        AssertOneLineFailure(run, "PgLlm needs the model endpoint's base URL (PgLlm:BaseUrl or PGLLM_BASE_URL)");
    }

    [Fact]
    public async Task A_database_that_does_not_exist_is_one_line_and_exit_code_1()
    {
        var connection = new NpgsqlConnectionStringBuilder(_fixture.Postgres.ConnectionString) { Database = "no_such_database" }.ConnectionString;

        var run = await RunExampleAsync(connection);

        AssertOneLineFailure(run, "database \"no_such_database\" does not exist");
    }

    [Fact]
    public async Task A_migration_that_fails_is_one_line_and_exit_code_1_and_the_worker_never_runs()
    {
        var connection = await _fixture.Postgres.CreateDatabaseAsync();
        await using (var db = NpgsqlDataSource.Create(connection))
        {
            // The example's own script adds a CHECK of this name; it exists already, so that script fails.
            await db.ExecAsync("CREATE TABLE public.user_reviews (id bigint PRIMARY KEY, review_text text NOT NULL, sentiment text CONSTRAINT user_reviews_sentiment_check CHECK (true))");
        }

        var run = await RunExampleAsync(connection);

        AssertOneLineFailure(run, "PgLlm could not migrate the database");
        Assert.DoesNotContain("started on", run.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_start_is_one_block_saying_what_is_served_and_never_a_key_or_password()
    {
        var connection = await _fixture.Postgres.CreateDatabaseAsync();
        var database = new NpgsqlConnectionStringBuilder(connection);
        var logs = new LogSink();
        using var host = BuildHost(connection, logs, new Dictionary<string, string?>
        {
            ["PgLlm:Worker:Concurrency"] = "3",
            ["PgLlm:Endpoints:spare:BaseUrl"] = "http://user:hunter2@127.0.0.1:9/v1?api-key=hunter3",
            ["PgLlm:Endpoints:spare:ApiKey"] = "hunter4",
            ["PgLlm:Endpoints:spare:Model"] = "spare-model",
            ["PgLlm:Endpoints:spare:Concurrency"] = "2",
        });

        await host.StartAsync();
        try
        {
            var block = await logs.WaitForAsync(e => e.Category == typeof(PgLlmStartup).FullName && e.Level == LogLevel.Information);

            var lines = block.Message.Split('\n');
            Assert.Equal(5, lines.Length);
            Assert.Equal($"PgLlm worker {host.Services.GetRequiredService<PgLlm.Worker.PgLlmWorker>().WorkerId} started on 127.0.0.1:{database.Port}/{database.Database} as postgres", lines[0]);
            Assert.Equal($"  endpoint: {_fixture.Model.BaseUrl}, model test-model", lines[1]);
            Assert.Equal("  endpoint 'spare': http://127.0.0.1:9/v1, model spare-model, 2 calls at once", lines[2]);
            Assert.Matches(@"^  tasks \(\d+\): .*public\.flaky:output, ", lines[3]);
            Assert.Equal("  concurrency: 3 model calls at once per endpoint, claims of up to 32 jobs", lines[4]);
            Assert.Single(logs.Events, e => e.Category == typeof(PgLlmStartup).FullName);
            Assert.DoesNotContain(logs.Events, e => e.Message.Contains("hunter", StringComparison.Ordinal) || e.Message.Contains(_fixture.Model.ApiKey!, StringComparison.Ordinal));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task Successes_are_logged_at_debug_and_summed_up_periodically()
    {
        var connection = await _fixture.Postgres.CreateDatabaseAsync();
        var logs = new LogSink();
        using var host = BuildHost(connection, logs, new Dictionary<string, string?> { ["PgLlm:Monitoring:SummaryInterval"] = "00:00:00.2" });
        await host.StartAsync();
        try
        {
            await logs.WaitForAsync(e => e.Category == typeof(PgLlmStartup).FullName);
            await using var db = NpgsqlDataSource.Create(connection);
            await db.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'hello')");

            var success = await logs.WaitForAsync(e => e.Level == LogLevel.Debug && e.Message.StartsWith("Job ", StringComparison.Ordinal));
            // Tokens are counted when the answer arrives, the success when it is written: maybe in two periods.
            var summaries = new List<Match>();
            await logs.WaitForAsync(_ =>
            {
                summaries = logs.Events.Where(e => e.Level == LogLevel.Information).Select(e => SummaryPattern().Match(e.Message)).Where(m => m.Success).ToList();
                return summaries.Sum(m => Count(m, "succeeded")) > 0 && summaries.Sum(m => Count(m, "tokens")) > 0;
            });

            Assert.Matches(@"^Job \d+ of task public\.flaky:output finished as succeeded \(\d+ input and \d+ output tokens\)$", success.Message);
            Assert.All(summaries, m => Assert.True(Count(m, "succeeded") + Count(m, "tokens") > 0, "a summary of a period without activity: " + m.Value));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public void A_period_without_activity_logs_nothing()
    {
        var logs = new LogSink();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var summary = new PgLlm.Observability.ActivitySummary(new PgLlmMonitoringOptions(), factory.CreateLogger<PgLlm.Observability.ActivitySummary>());

        summary.LogActivity(DateTimeOffset.UtcNow.AddMinutes(-1));

        Assert.Empty(logs.Events);
    }

    [Fact]
    public async Task The_example_writes_its_sql_into_its_own_folder_from_any_directory()
    {
        var elsewhere = Directory.CreateTempSubdirectory("pgllm-write-sql-");
        try
        {
            var run = await RunProcessAsync(elsewhere.FullName, ["--write-sql"], new Dictionary<string, string?>());
            var sql = Path.Combine(RepositoryRoot(), "examples", "Reviews", "Sql");

            Assert.Equal(0, run.ExitCode);
            Assert.Contains($" of 2 scripts to {sql} (", run.Output, StringComparison.Ordinal);
            Assert.Empty(elsewhere.EnumerateFileSystemInfos());
            Assert.Equal(2, Directory.GetFiles(sql, "*.sql").Length);
        }
        finally
        {
            elsewhere.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task The_example_serving_its_own_database_says_how_to_connect_and_the_insert_it_suggests_gets_filled()
    {
        var start = ExampleStart(Directory.GetCurrentDirectory(), ["--serve"]);
        start.Environment.Remove("PGLLM_CONNECTION");
        start.Environment["PGLLM_BASE_URL"] = _fixture.Model.BaseUrl.ToString();
        start.Environment["PGLLM_API_KEY"] = _fixture.Model.ApiKey;
        start.Environment["PGLLM_MODEL"] = "test-model";
        using var process = Process.Start(start)!;
        var output = new ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { output.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { output.Enqueue(e.Data); } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await WaitUntilAsync(() => output.Any(l => l.Contains("started on", StringComparison.Ordinal)), output);
            var connection = output.Select(l => Regex.Match(l, "^  connection string: (.+)$")).Single(m => m.Success).Groups[1].Value;
            var database = new NpgsqlConnectionStringBuilder(connection);
            var insert = output.Single(l => l.TrimStart().StartsWith("INSERT INTO public.user_reviews", StringComparison.Ordinal)).Trim();

            Assert.Contains($"  psql:              psql \"host=127.0.0.1 port={database.Port} dbname={database.Database} user={database.Username}\"", output);
            await using var db = NpgsqlDataSource.Create(connection);
            await db.ExecAsync(insert);
            await WaitUntilAsync(async () => await db.ScalarAsync<long>("SELECT count(*) FROM public.user_reviews WHERE sentiment IS NOT NULL") == 1, output);
        }
        finally
        {
            // SIGTERM, as a service manager stops it: the host stops and the throwaway database with it.
            using (var term = Process.Start("kill", ["-TERM", process.Id.ToString(CultureInfo.InvariantCulture)]))
            {
                await term.WaitForExitAsync();
            }

            using var timeout = new CancellationTokenSource(Bound);
            await process.WaitForExitAsync(timeout.Token);
        }

        Assert.Equal(0, process.ExitCode);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, IEnumerable<string> output) =>
        await WaitUntilAsync(() => Task.FromResult(condition()), output);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, IEnumerable<string> output)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "not within the bound; the example wrote:\n" + string.Join('\n', output));
            await Task.Delay(50);
        }
    }

    private static long Count(Match summary, string group) => long.Parse(summary.Groups[group].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^PgLlm in the last \d+ s: (?<succeeded>\d+) jobs succeeded, \d+ retried, \d+ failed, \d+ discarded; (?<tokens>\d+) tokens \(\d+ input, \d+ output\)")]
    private static partial Regex SummaryPattern();

    private IHost BuildHost(string connection, LogSink logs, IDictionary<string, string?> extra)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration["PgLlm:ConnectionString"] = connection;
        builder.Configuration["PgLlm:BaseUrl"] = _fixture.Model.BaseUrl.ToString();
        builder.Configuration["PgLlm:ApiKey"] = _fixture.Model.ApiKey;
        builder.Configuration["PgLlm:Model"] = "test-model";
        builder.Configuration["PgLlm:Worker:PollInterval"] = "00:00:00.5";
        foreach (var (key, value) in extra)
        {
            builder.Configuration[key] = value;
        }

        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.Logging.AddProvider(logs);
        builder.Services.AddPgLlm(builder.Configuration, PgLlmFixture.Scripts);
        return builder.Build();
    }

    private static void AssertOneLineFailure(ProcessRun run, string expected)
    {
        Assert.Equal(PgLlmServiceCollectionExtensions.StartFailedExitCode, run.ExitCode);
        Assert.Contains(expected, run.Errors, StringComparison.Ordinal);
        // The problem is one critical log line (on stderr: the example sends warnings and errors there); the rest is the example's and the host's own few lines.
        Assert.Single(run.Output.Split('\n'), l => l.StartsWith("crit:", StringComparison.Ordinal));
        Assert.True(run.Output.Split('\n').Length < 20, run.Output);
        Assert.DoesNotMatch(@"(?m)^\s+at \S+\(", run.Output);
        Assert.DoesNotContain("Unhandled exception", run.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", run.Output, StringComparison.Ordinal);
    }

    private Task<ProcessRun> RunExampleAsync(string connection, string? baseUrl = null) =>
        RunProcessAsync(Directory.GetCurrentDirectory(), ["--serve"], new Dictionary<string, string?>
        {
            ["PGLLM_CONNECTION"] = connection,
            ["PGLLM_BASE_URL"] = baseUrl ?? _fixture.Model.BaseUrl.ToString(),
            ["PGLLM_API_KEY"] = _fixture.Model.ApiKey,
            ["PGLLM_MODEL"] = "test-model",
        });

    private static ProcessStartInfo ExampleStart(string workingDirectory, string[] args)
    {
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var example = Path.Combine(RepositoryRoot(), "examples", "Reviews", "bin", configuration, "net10.0", "Reviews.dll");
        Assert.True(File.Exists(example), $"the example is not built: {example}");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        start.ArgumentList.Add(example);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        return start;
    }

    private static async Task<ProcessRun> RunProcessAsync(string workingDirectory, string[] args, IDictionary<string, string?> environment)
    {
        var start = ExampleStart(workingDirectory, args);
        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        var output = new ConcurrentQueue<string>();
        var errors = new ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { output.Enqueue(e.Data); } };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                output.Enqueue(e.Data);
                errors.Enqueue(e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(Bound);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the example did not exit within the bound:\n" + string.Join('\n', output));
        }

        process.WaitForExit();
        return new ProcessRun(process.ExitCode, string.Join('\n', output), string.Join('\n', errors));
    }

    private static string RepositoryRoot() =>
        Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));

    /// <summary>A finished run: its exit code, everything it wrote, and what of it went to stderr.</summary>
    private sealed record ProcessRun(int ExitCode, string Output, string Errors);

    private sealed record LogEvent(string Category, LogLevel Level, string Message);

    /// <summary>Keeps every log event of the host under test.</summary>
    private sealed class LogSink : ILoggerProvider
    {
        private readonly ConcurrentQueue<LogEvent> _events = new();

        public IReadOnlyCollection<LogEvent> Events => _events;

        public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _events);

        public void Dispose()
        {
        }

        public async Task<LogEvent> WaitForAsync(Func<LogEvent, bool> match)
        {
            var deadline = DateTime.UtcNow + Bound;
            while (true)
            {
                if (_events.FirstOrDefault(match) is { } found)
                {
                    return found;
                }

                Assert.True(DateTime.UtcNow < deadline, "no such log event within the bound; logged:\n" + string.Join('\n', _events.Select(e => e.Message)));
                await Task.Delay(20);
            }
        }

        private sealed class Logger(string category, ConcurrentQueue<LogEvent> events) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                events.Enqueue(new LogEvent(category, logLevel, formatter(state, exception)));
        }
    }
}
