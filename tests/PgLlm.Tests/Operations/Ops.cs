using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Cli;
using PgLlm.Completions;
using PgLlm.Migrations;
using PgLlm.Tests.Integration;
using PgLlm.Worker;
using Spectre.Console;
using Spectre.Console.Testing;

namespace PgLlm.Tests.Operations;

/// <summary>A migrated test database with its connection string (the command line takes the string).</summary>
internal sealed record TestDatabase(string ConnectionString, NpgsqlDataSource DataSource) : IAsyncDisposable
{
    public ValueTask DisposeAsync() => DataSource.DisposeAsync();
}

/// <summary>Plumbing shared by the operations tests: databases, workers with full options, the command line in-process.</summary>
internal static class Ops
{
    public static async Task<TestDatabase> CreateDatabaseAsync(PgLlmFixture fixture, bool migrate = true)
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        var dataSource = NpgsqlDataSource.Create(connectionString);
        if (migrate)
        {
            await new PgLlmMigrator(dataSource, PgLlmFixture.Scripts).MigrateAsync();
        }

        return new TestDatabase(connectionString, dataSource);
    }

    /// <summary>Settings pointing at the fixture's endpoint, with test-friendly timings.</summary>
    public static PgLlmOptions Options(PgLlmFixture fixture, Action<PgLlmOptions>? configure = null)
    {
        var options = TestOptions.For(fixture.Model);
        configure?.Invoke(options);
        return options;
    }

    public static PgLlmWorker Worker(NpgsqlDataSource dataSource, PgLlmOptions options) =>
        new(dataSource, ChatClientFactory.Create(options), Microsoft.Extensions.Options.Options.Create(options));

    /// <summary>The configuration the command line would read from appsettings.json and the environment.</summary>
    public static IConfiguration Configuration(PgLlmFixture fixture, IDictionary<string, string?>? extra = null)
    {
        var values = new Dictionary<string, string?>
        {
            ["PgLlm:BaseUrl"] = fixture.Model.BaseUrl.ToString(),
            ["PgLlm:ApiKey"] = fixture.Model.ApiKey,
            ["PgLlm:Model"] = "test-model",
            ["PgLlm:Worker:PollInterval"] = "00:00:00.5",
            ["PgLlm:Worker:RetryBaseDelay"] = "00:00:00.02",
            ["PgLlm:Worker:RetryMaxDelay"] = "00:00:00.1",
        };
        foreach (var (key, value) in extra ?? new Dictionary<string, string?>())
        {
            values[key] = value;
        }

        return new ConfigurationBuilder().AddInMemoryCollection(values).Build();
    }

    /// <summary>Runs <c>pgllm</c> in-process with the test scripts; returns the exit code and what it printed.</summary>
    public static async Task<(int Exit, string Output)> RunAsync(IConfiguration configuration, string? connectionString, params string[] args)
    {
        var console = new TestConsole().Width(250);
        var exit = await RunAsync(console, configuration, connectionString, args);
        return (exit, console.Output);
    }

    /// <summary>Runs <c>pgllm</c> in-process, writing to <paramref name="console"/>; returns the exit code.</summary>
    public static async Task<int> RunAsync(IAnsiConsole console, IConfiguration configuration, string? connectionString, params string[] args)
    {
        var commandLine = new PgLlmCommandLine(PgLlmFixture.Scripts, console, configuration);
        string[] all = connectionString is null ? args : [.. args, "--connection", connectionString];
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        return await commandLine.InvokeAsync(all, timeout.Token);
    }

    /// <summary>A loopback port nothing listens on (bound, then released).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}

/// <summary>A console writer that can be read while a command writes to it from another thread.</summary>
internal sealed class SynchronizedWriter : StringWriter
{
    private readonly Lock _lock = new();

    public override void Write(char value)
    {
        lock (_lock)
        {
            base.Write(value);
        }
    }

    public override void Write(string? value)
    {
        lock (_lock)
        {
            base.Write(value);
        }
    }

    public override void Write(char[] buffer, int index, int count)
    {
        lock (_lock)
        {
            base.Write(buffer, index, count);
        }
    }

    public override string ToString()
    {
        lock (_lock)
        {
            return base.ToString();
        }
    }
}
