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
    /// Binds <see cref="PgLlmOptions"/> (section <c>PgLlm</c>, then <c>PGLLM_*</c> variables), registers an
    /// <see cref="NpgsqlDataSource"/> unless one exists, the model client (keyed <see cref="ChatClientKey"/>,
    /// unless registered), the worker and its queue maintenance (rescue, pruning) as hosted services, the queue monitor (<see cref="QueueMonitor"/>) and the
    /// health check <see cref="PgLlmHealthCheck"/> (name <c>pgllm</c>). With <paramref name="scripts"/>, migrations run
    /// at start-up before the worker starts.
    /// </summary>
    public static IServiceCollection AddPgLlm(this IServiceCollection services, IConfiguration configuration, IEnumerable<PgLlmScript>? scripts = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<PgLlmOptions>().Configure(options => Bind(configuration, options));
        services.TryAddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<PgLlmOptions>>().Value;
            if (string.IsNullOrWhiteSpace(options.ConnectionString))
            {
                throw new InvalidOperationException("PgLlm needs a connection string (PgLlm:ConnectionString or PGLLM_CONNECTION).");
            }

            return new NpgsqlDataSourceBuilder(options.ConnectionString).Build();
        });
        services.TryAddKeyedSingleton<IChatClient>(ChatClientKey, (sp, _) =>
            ChatClientFactory.Create(sp.GetRequiredService<IOptions<PgLlmOptions>>().Value, sp.GetRequiredService<NpgsqlDataSource>()));
        if (scripts is not null)
        {
            var list = scripts.ToList();
            services.AddHostedService(sp => new MigrationService(
                new PgLlmMigrator(sp.GetRequiredService<NpgsqlDataSource>(), list, sp.GetService<ILogger<PgLlmMigrator>>())));
        }

        services.TryAddSingleton(sp => new PgLlmWorker(
            sp.GetRequiredService<NpgsqlDataSource>(),
            sp.GetRequiredKeyedService<IChatClient>(ChatClientKey),
            sp.GetRequiredService<IOptions<PgLlmOptions>>(),
            sp.GetService<ILogger<PgLlmWorker>>()) { HostedMaintenance = false });
        services.AddHostedService(sp => sp.GetRequiredService<PgLlmWorker>());
        // Rescue of expired leases and pruning of old history: a service of its own, beside the worker.
        services.AddHostedService(sp => new QueueMaintenance(
            sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IOptions<PgLlmOptions>>().Value.Worker, sp.GetService<ILogger<QueueMaintenance>>()));
        services.AddHostedService(sp => new QueueMonitor(
            sp.GetRequiredService<NpgsqlDataSource>(), sp.GetRequiredService<IOptions<PgLlmOptions>>(), sp.GetService<ILogger<QueueMonitor>>()));
        services.AddHealthChecks().AddCheck<PgLlmHealthCheck>(HealthCheckName, tags: [HealthCheckName]);
        return services;
    }

    /// <summary>Binds the section, then lets the <c>PGLLM_*</c> environment variables override it.</summary>
    public static void Bind(IConfiguration configuration, PgLlmOptions options)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        ArgumentNullException.ThrowIfNull(options);
        configuration.GetSection(PgLlmOptions.SectionName).Bind(options);
        options.ConnectionString = configuration["PGLLM_CONNECTION"] ?? options.ConnectionString;
        options.BaseUrl = configuration["PGLLM_BASE_URL"] ?? options.BaseUrl;
        options.ApiKey = configuration["PGLLM_API_KEY"] ?? options.ApiKey;
        options.Model = configuration["PGLLM_MODEL"] ?? options.Model;
    }

    private sealed class MigrationService(PgLlmMigrator migrator) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => migrator.MigrateAsync(cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
