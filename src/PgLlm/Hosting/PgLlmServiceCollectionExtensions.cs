using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Migrations;
using PgLlm.Observability;
using PgLlm.Worker;

namespace PgLlm.Hosting;

/// <summary>Registers PgLlm in a host.</summary>
public static class PgLlmServiceCollectionExtensions
{
    /// <summary>The service key of the <see cref="IChatClient"/> the worker uses.</summary>
    public const string ChatClientKey = "PgLlm";

    /// <summary>The name (and tag) of the health check reporting queue depth and worker liveness.</summary>
    public const string HealthCheckName = "pgllm";

    /// <summary>
    /// The process's exit code when PgLlm's start fails (a setting is missing or unreadable, the database cannot be
    /// reached, a migration stops): the reason is logged as one critical line and the application stops.
    /// </summary>
    public const int StartFailedExitCode = 1;

    /// <summary>
    /// Binds <see cref="PgLlmOptions"/> (section <c>PgLlm</c>, then <c>PGLLM_*</c> variables), registers an
    /// <see cref="NpgsqlDataSource"/> unless one exists, the model client (keyed <see cref="ChatClientKey"/>,
    /// unless registered), the worker and its queue maintenance (rescue, pruning) as hosted services, the queue monitor
    /// (<see cref="QueueMonitor"/>), a summary of the activity logged every <see cref="PgLlmMonitoringOptions.SummaryInterval"/>
    /// and the health check <see cref="PgLlmHealthCheck"/> (name <c>pgllm</c>). With <paramref name="scripts"/>, migrations
    /// run at start-up before the worker starts.
    /// </summary>
    /// <remarks>
    /// At start-up the host logs one block saying what it serves (endpoints and models, tasks, concurrency, database;
    /// never a key or a password). A start that cannot work (a missing or unreadable setting, a database that cannot
    /// be reached, a migration that stops) is logged as one critical line, the application stops, and the process
    /// exits with <see cref="StartFailedExitCode"/> (through <see cref="Environment.ExitCode"/>, so
    /// <c>await builder.Build().RunAsync();</c> needs nothing more).
    /// </remarks>
    public static IServiceCollection AddPgLlm(this IServiceCollection services, IConfiguration configuration, IEnumerable<PgLlmScript>? scripts = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<PgLlmOptions>().Configure(options => Bind(configuration, options));
        services.TryAddSingleton(sp =>
            new NpgsqlDataSourceBuilder(PgLlmConnectionString.ToNpgsql(sp.GetRequiredService<IOptions<PgLlmOptions>>().Value.ConnectionString)).Build());
        services.TryAddKeyedSingleton<IChatClient>(ChatClientKey, (sp, _) =>
            ChatClientFactory.Create(sp.GetRequiredService<IOptions<PgLlmOptions>>().Value, sp.GetRequiredService<NpgsqlDataSource>()));

        // First: a start that cannot work ends as one line and a non-zero exit code, and the services below stay idle.
        services.TryAddSingleton(sp => new PgLlmStartup(sp, sp.GetRequiredService<IHostApplicationLifetime>(), sp.GetService<ILogger<PgLlmStartup>>()));
        services.AddHostedService(sp => sp.GetRequiredService<PgLlmStartup>());
        if (scripts is not null)
        {
            var list = scripts.ToList();
            AddGuarded(services, sp => sp.GetRequiredService<PgLlmStartup>().Guard(() => new MigrationService(
                new PgLlmMigrator(sp.GetRequiredService<NpgsqlDataSource>(), list, ErrorsAsDebug.Wrap(sp.GetService<ILogger<PgLlmMigrator>>()))
                {
                    PlanOptions = sp.GetRequiredService<IOptions<PgLlmOptions>>().Value,
                },
                sp.GetRequiredService<PgLlmStartup>(),
                sp.GetRequiredService<NpgsqlDataSource>().ConnectionString)));
        }

        services.TryAddSingleton(sp => new PgLlmWorker(
            sp.GetRequiredService<NpgsqlDataSource>(),
            sp.GetRequiredKeyedService<IChatClient>(ChatClientKey),
            sp.GetRequiredService<IOptions<PgLlmOptions>>(),
            sp.GetService<ILogger<PgLlmWorker>>()) { HostedMaintenance = false });
        AddGuarded(services, sp => sp.GetRequiredService<PgLlmStartup>().Guard(() => sp.GetRequiredService<PgLlmWorker>()));
        // Rescue of expired leases and pruning of old history: a service of its own, beside the worker.
        AddGuarded(services, sp => sp.GetRequiredService<PgLlmStartup>().Guard(() => new QueueMaintenance(
            sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IOptions<PgLlmOptions>>().Value.Worker, sp.GetService<ILogger<QueueMaintenance>>())));
        AddGuarded(services, sp => sp.GetRequiredService<PgLlmStartup>().Guard(() => new QueueMonitor(
            sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IOptions<PgLlmOptions>>(), sp.GetService<ILogger<QueueMonitor>>())));
        AddGuarded(services, sp => sp.GetRequiredService<PgLlmStartup>().Guard(() => new ActivitySummary(
            sp.GetRequiredService<IOptions<PgLlmOptions>>().Value.Monitoring, sp.GetService<ILogger<ActivitySummary>>(), sp.GetService<TimeProvider>())));
        services.AddHealthChecks().AddCheck<PgLlmHealthCheck>(HealthCheckName, tags: [HealthCheckName]);
        return services;
    }

    /// <summary>
    /// Adds a hosted service made by <paramref name="create"/>. Not <c>AddHostedService</c>: it keeps one service per
    /// implementation type, and these factories all return <see cref="IHostedService"/>.
    /// </summary>
    private static void AddGuarded(IServiceCollection services, Func<IServiceProvider, IHostedService> create) =>
        services.AddSingleton(create);

    /// <summary>Binds the section, then lets the <c>PGLLM_*</c> environment variables override it.</summary>
    public static void Bind(IConfiguration configuration, PgLlmOptions options)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(options);
        configuration.GetSection(PgLlmOptions.SectionName).Bind(options);
        // A postgres:// URL becomes Npgsql's keywords; one that cannot be read is kept and reported when it is used.
        options.ConnectionString = PgLlmConnectionString.TryToNpgsql(configuration["PGLLM_CONNECTION"] ?? options.ConnectionString);
        options.BaseUrl = configuration["PGLLM_BASE_URL"] ?? options.BaseUrl;
        options.ApiKey = configuration["PGLLM_API_KEY"] ?? options.ApiKey;
        options.Model = configuration["PGLLM_MODEL"] ?? options.Model;
    }

    /// <summary>Migrates at start-up; a migration that stops ends the start with its message (see <see cref="PgLlmStartup"/>).</summary>
    private sealed class MigrationService(PgLlmMigrator migrator, PgLlmStartup startup, string connectionString) : IHostedService
    {
        public async Task StartAsync(CancellationToken cancellationToken)
        {
            if (startup.Failed || cancellationToken.IsCancellationRequested)
            {
                return;
            }

            try
            {
                await migrator.MigrateAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // The host is stopping.
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Whatever stopped the migration (nothing of a failed script is applied), the start ends on its message.
                startup.Fail(PgLlmStartup.DescribeDatabaseFailure(ex, connectionString) ?? "PgLlm could not migrate the database: " + ex.Message, ex);
            }
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>
    /// The migrator's log with DbUp's errors at Debug: DbUp logs a failed script several times with its exception, and
    /// the start already reports the failure, once, as one critical line (<see cref="PgLlmStartup.Fail"/>).
    /// </summary>
    private sealed class ErrorsAsDebug(ILogger inner) : ILogger<PgLlmMigrator>
    {
        public static ErrorsAsDebug? Wrap(ILogger<PgLlmMigrator>? logger) => logger is null ? null : new ErrorsAsDebug(logger);

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(Demote(logLevel));

#pragma warning disable CA1873 // A pass-through: the message is formatted only if the inner logger writes it.
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            inner.Log(Demote(logLevel), eventId, state, exception, formatter);
#pragma warning restore CA1873

        private static LogLevel Demote(LogLevel level) => level is LogLevel.Error or LogLevel.Critical ? LogLevel.Debug : level;
    }
}
