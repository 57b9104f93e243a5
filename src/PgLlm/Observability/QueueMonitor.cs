using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;

namespace PgLlm.Observability;

/// <summary>
/// Samples the queue depth for the <c>pgllm.queue.depth</c> gauge every
/// <see cref="PgLlmMonitoringOptions.QueueSampleInterval"/>, and on start writes the configured
/// prices (<c>PgLlm:Prices</c>) into <c>llm.model_price</c> for the view <c>llm.usage_daily</c>.
/// </summary>
public sealed partial class QueueMonitor : BackgroundService
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly PgLlmOptions _options;
    private readonly ILogger _logger;

    /// <summary>Creates the monitor.</summary>
    public QueueMonitor(NpgsqlDataSource dataSource, IOptions<PgLlmOptions> options, ILogger<QueueMonitor>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(options);
        _dataSource = dataSource;
        _options = options.Value;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var pricesWritten = _options.Prices.Count == 0;
        using var timer = new PeriodicTimer(_options.Monitoring.QueueSampleInterval);
        do
        {
            try
            {
                if (!pricesWritten)
                {
                    await PgLlmStatus.WritePricesAsync(_dataSource, _options.Prices, stoppingToken).ConfigureAwait(false);
                    pricesWritten = true;
                }

                PgLlmMetrics.RecordQueueDepth(await PgLlmStatus.ReadDepthAsync(_dataSource, stoppingToken).ConfigureAwait(false));
                PgLlmMetrics.RecordBatches(await BatchStatus.ReadAllAsync(_dataSource, stoppingToken).ConfigureAwait(false), DateTimeOffset.UtcNow);
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException && !stoppingToken.IsCancellationRequested)
            {
                LogSampleFailed(ex);
            }
        }
        while (await WaitAsync(timer, stoppingToken).ConfigureAwait(false));
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken cancellationToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not sample the queue depth")]
    private partial void LogSampleFailed(Exception exception);
}
