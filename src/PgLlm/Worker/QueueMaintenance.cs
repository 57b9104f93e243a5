using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// The queue's upkeep, every <see cref="PgLlmWorkerOptions.RescueInterval"/> (and once at start): returns jobs
/// whose lease expired to the queue (their worker died or lost its database) and prunes finished history
/// older than <see cref="PgLlmWorkerOptions.Retention"/>. A hosted service of its own next to the worker
/// (<c>AddPgLlm</c>); <see cref="PgLlmWorker.RunAsync"/> and <see cref="PgLlmWorker.RunUntilIdleAsync"/> run it
/// alongside their drain. A database fault is logged and the next tick tries again.
/// </summary>
internal sealed partial class QueueMaintenance : BackgroundService
{
    private readonly JobQueue _queue;
    private readonly PgLlmWorkerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public QueueMaintenance(NpgsqlDataSource dataSource, PgLlmWorkerOptions options, ILogger? logger = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        _queue = new JobQueue(dataSource);
        _options = options;
        _time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Rescues expired leases and prunes old history once; the number of jobs rescued.</summary>
    public async Task<int> RunOnceAsync(CancellationToken cancellationToken)
    {
        var rescued = await _queue.RescueAsync(cancellationToken).ConfigureAwait(false);
        if (rescued > 0)
        {
            LogRescued(rescued);
        }

        if (_options.Retention is { } retention)
        {
            await _queue.PruneAsync(retention, cancellationToken).ConfigureAwait(false);
        }

        return rescued;
    }

    /// <summary>Runs <see cref="RunOnceAsync"/> now and at every interval until cancelled.</summary>
    public async Task RunPeriodicallyAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.RescueInterval, _time);
        try
        {
            do
            {
                try
                {
                    await RunOnceAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
                {
                    LogMaintenanceFailed(ex, _options.RescueInterval);
                }
            }
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <inheritdoc />
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => RunPeriodicallyAsync(stoppingToken);

    /// <inheritdoc />
    public override void Dispose()
    {
        _queue.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Rescued {Count} jobs whose lease expired")]
    private partial void LogRescued(int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Queue maintenance failed; trying again in {Delay}")]
    private partial void LogMaintenanceFailed(Exception exception, TimeSpan delay);
}
