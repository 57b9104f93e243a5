using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Migrations;
using PgLlm.Worker;

namespace PgLlm.Hosting;

/// <summary>
/// The first of PgLlm's hosted services. It makes a start that cannot work end as one critical log line and a
/// non-zero exit code (<see cref="PgLlmServiceCollectionExtensions.StartFailedExitCode"/>) rather than an exception
/// out of <c>RunAsync</c> (a stack trace per logger, then the runtime's crash): a missing or unreadable setting, a
/// database that cannot be reached, a migration that stops. It then stops the application, and PgLlm's other
/// services do not run. Once every service started it logs one block saying what this process serves: endpoints and
/// models (never a key), the tasks in <c>llm.task</c>, concurrency and the database (never the password).
/// </summary>
/// <remarks>
/// The host resolves every hosted service before it starts the first, so PgLlm's services are created through
/// <see cref="Guard"/>: when the configuration is unusable they are replaced by a service that does nothing, and
/// nothing throws while the host starts.
/// </remarks>
internal sealed partial class PgLlmStartup : IHostedLifecycleService
{
    private static readonly TimeSpan ReachTimeout = TimeSpan.FromSeconds(15);

    private readonly IServiceProvider _services;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly ILogger _logger;
    private readonly Lazy<string?> _configurationError;
    private volatile bool _failed;

    public PgLlmStartup(IServiceProvider services, IHostApplicationLifetime lifetime, ILogger<PgLlmStartup>? logger = null)
    {
        _services = services;
        _lifetime = lifetime;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _configurationError = new Lazy<string?>(FindConfigurationError, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>Why PgLlm's settings cannot work (one line), or null when they can.</summary>
    public string? ConfigurationError => _configurationError.Value;

    /// <summary>Whether the start failed: PgLlm's services stay idle and the application is stopping.</summary>
    public bool Failed => _failed || ConfigurationError is not null;

    /// <summary>The service <paramref name="create"/> makes, or one that does nothing when the settings cannot work.</summary>
    public IHostedService Guard(Func<IHostedService> create) => ConfigurationError is null ? create() : Idle.Instance;

    /// <summary>Ends the start: one critical line, the exit code, and the application stops.</summary>
    /// <param name="message">What went wrong, for the user: one line (a migration's several problems: one line each).</param>
    /// <param name="exception">The exception behind it, logged at Debug only: the message says what to fix.</param>
    public void Fail(string message, Exception? exception = null)
    {
        _failed = true;
        LogStartFailed(message);
        if (exception is not null)
        {
            LogStartFailedDetails(exception);
        }

        Environment.ExitCode = PgLlmServiceCollectionExtensions.StartFailedExitCode;
        _lifetime.StopApplication();
    }

    /// <summary>Describes a failure to reach or use the database in one line, or null for an exception that is a bug.</summary>
    public static string? DescribeDatabaseFailure(Exception exception, string? connectionString)
    {
        var where = PgLlmConnectionString.Describe(connectionString);
        return exception switch
        {
            PgLlmConfigurationException configuration => configuration.Message,
            PgLlmMigrationException migration => "PgLlm could not migrate the database: " + migration.Message,
            PostgresException { SqlState: "28P01" or "28000" } pg => $"PostgreSQL at {where} refused the login: {pg.MessageText}.",
            PostgresException { SqlState: "3D000" } pg => $"PostgreSQL at {where}: {pg.MessageText} (create it, or name another in the connection string).",
            PostgresException pg => $"PostgreSQL at {where} answered error {pg.SqlState}: {pg.MessageText}.",
            NpgsqlException or SocketException or TimeoutException =>
                $"PgLlm cannot reach PostgreSQL at {where}: {Innermost(exception)}.",
            _ => null,
        };
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (ConfigurationError is { } error)
        {
            Fail(error);
            return;
        }

        // A database that cannot be reached is said once here, before the migration and the worker try.
        var dataSource = _services.GetRequiredService<NpgsqlDataSource>();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ReachTimeout);
        try
        {
            await using var connection = await dataSource.OpenConnectionAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host is stopping: nothing to report.
        }
        catch (Exception ex) when (DescribeDatabaseFailure(ex is OperationCanceledException ? new TimeoutException("no answer within " + ReachTimeout.TotalSeconds + " s") : ex, dataSource.ConnectionString) is { } message)
        {
            Fail(message, ex);
        }
    }

    public async Task StartedAsync(CancellationToken cancellationToken)
    {
        if (Failed || cancellationToken.IsCancellationRequested || !_logger.IsEnabled(LogLevel.Information))
        {
            return;
        }

        var options = _services.GetRequiredService<IOptions<PgLlmOptions>>().Value;
        var dataSource = _services.GetRequiredService<NpgsqlDataSource>();
        var worker = _services.GetService<PgLlmWorker>();
        string tasks;
        try
        {
            tasks = await ReadTasksAsync(dataSource, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped while starting (Ctrl+C, SIGTERM): a requested stop, not a failed start.
            return;
        }

        var database = PgLlmConnectionString.Describe(dataSource.ConnectionString);
        var endpoints = DescribeEndpoints(options);
        LogServing(worker?.WorkerId ?? "(none)", database, endpoints, tasks, options.Worker.Concurrency, options.Worker.BatchSize);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>The endpoints and their models, one per line: scheme, host, port and path only (a URL may carry a key).</summary>
    internal static string DescribeEndpoints(PgLlmOptions options)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"  endpoint: {SafeUrl(options.BaseUrl)}, model {options.Model ?? "(none set)"}");
        foreach (var (name, endpoint) in options.Endpoints.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            var concurrency = endpoint.Concurrency is { } own ? string.Create(CultureInfo.InvariantCulture, $", {own} calls at once") : string.Empty;
            text.Append(CultureInfo.InvariantCulture, $"\n  endpoint '{name}': {SafeUrl(endpoint.BaseUrl)}, model {endpoint.Model ?? options.Model ?? "(none set)"}{concurrency}");
        }

        return text.ToString();
    }

    /// <summary>A URL without user info, query or fragment, where keys hide.</summary>
    internal static string SafeUrl(string? url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri)
            ? uri.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped)
            : "(not set)";

    private static async Task<string> ReadTasksAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        try
        {
            await using var command = dataSource.CreateCommand("SELECT name, model FROM llm.task ORDER BY name");
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            var tasks = new List<string>();
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                tasks.Add(reader.IsDBNull(1) ? reader.GetString(0) : $"{reader.GetString(0)} (model {reader.GetString(1)})");
            }

            return tasks.Count == 0
                ? "tasks: none registered yet (llm.task is empty: migrate with the application's scripts)"
                : string.Create(CultureInfo.InvariantCulture, $"tasks ({tasks.Count}): {string.Join(", ", tasks)}");
        }
        catch (PostgresException ex) when (ex.SqlState is "42P01" or "3F000")
        {
            return "tasks: none, the database has no PgLlm schema yet (pass the scripts to AddPgLlm, or run 'pgllm migrate')";
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            return "tasks: could not be read (" + Innermost(ex) + ")";
        }
    }

    private static string Innermost(Exception exception)
    {
        var inner = exception;
        while (inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }

        return inner.Message.TrimEnd('.');
    }

    private string? FindConfigurationError()
    {
        try
        {
            // Resolving them builds the data source, the model client and the worker: each checks its settings.
            _ = _services.GetRequiredService<NpgsqlDataSource>();
            _ = _services.GetService<PgLlmWorker>();
            return null;
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            var message = ex.Message;
            var end = message.IndexOfAny(['\r', '\n']);
            return end < 0 ? message : message[..end];
        }
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "{Message}")]
    private partial void LogStartFailed(string message);

    [LoggerMessage(Level = LogLevel.Debug, Message = "The start failed with this exception")]
    private partial void LogStartFailedDetails(Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "PgLlm worker {WorkerId} started on {Database}\n{Endpoints}\n  {Tasks}\n  concurrency: {Concurrency} model calls at once per endpoint, claims of up to {BatchSize} jobs")]
    private partial void LogServing(string workerId, string database, string endpoints, string tasks, int concurrency, int batchSize);

    /// <summary>Stands in for a PgLlm service when the settings cannot work.</summary>
    private sealed class Idle : IHostedService
    {
        public static readonly Idle Instance = new();

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
