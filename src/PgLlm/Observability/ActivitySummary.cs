using System.Diagnostics.Metrics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace PgLlm.Observability;

/// <summary>
/// Logs what this process did, every <see cref="PgLlmMonitoringOptions.SummaryInterval"/> (a minute by default)
/// and once when it stops, at Information, only when something happened: jobs succeeded, retried, failed and
/// discarded, and tokens used, with the queue depth last sampled by <see cref="QueueMonitor"/>. It counts what
/// <see cref="PgLlmMetrics"/> already measures (meter <c>PgLlm</c>: the job counters and <c>gen_ai.client.token.usage</c>)
/// through a <see cref="MeterListener"/>, so the worker does no work of its own for it.
/// </summary>
internal sealed partial class ActivitySummary : BackgroundService
{
    private const string TokenUsage = "gen_ai.client.token.usage";

    private readonly TimeSpan? _interval;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly MeterListener _listener = new();
    private long _succeeded;
    private long _retried;
    private long _failed;
    private long _discarded;
    private long _inputTokens;
    private long _outputTokens;

    public ActivitySummary(PgLlmMonitoringOptions options, ILogger<ActivitySummary>? logger = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _interval = options.SummaryInterval is { } interval && interval > TimeSpan.Zero ? interval : null;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == PgLlmMetrics.MeterName && instrument.Name is
                PgLlmMetrics.SucceededName or PgLlmMetrics.RetriedName or PgLlmMetrics.FailedName or PgLlmMetrics.DiscardedName or TokenUsage)
            {
                listener.EnableMeasurementEvents(instrument, this);
            }
        };
        _listener.SetMeasurementEventCallback<long>(static (instrument, value, tags, state) => ((ActivitySummary)state!).Count(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<int>(static (instrument, value, tags, state) => ((ActivitySummary)state!).Count(instrument.Name, value, tags));
    }

    /// <summary>What happened since the last summary, and starts counting anew.</summary>
    internal Counts TakeCounts() => new(
        Interlocked.Exchange(ref _succeeded, 0),
        Interlocked.Exchange(ref _retried, 0),
        Interlocked.Exchange(ref _failed, 0),
        Interlocked.Exchange(ref _discarded, 0),
        Interlocked.Exchange(ref _inputTokens, 0),
        Interlocked.Exchange(ref _outputTokens, 0));

    /// <summary>Starts counting (the hosted service does it when it starts).</summary>
    internal void Listen() => _listener.Start();

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (_interval is not { } interval || !_logger.IsEnabled(LogLevel.Information))
        {
            return;
        }

        Listen();
        var since = _time.GetUtcNow();
        using var timer = new PeriodicTimer(interval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                since = LogActivity(since);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }

        // What happened since the last summary, so a short run says what it did too.
        LogActivity(since);
    }

    /// <inheritdoc />
    public override void Dispose()
    {
        _listener.Dispose();
        base.Dispose();
    }

    /// <summary>Logs the activity since <paramref name="since"/> if there was any; returns the new start of the period.</summary>
    internal DateTimeOffset LogActivity(DateTimeOffset since)
    {
        var now = _time.GetUtcNow();
        var activity = TakeCounts();
        if (activity.IsEmpty)
        {
            return now;
        }

        var depth = PgLlmMetrics.LastQueueDepth;
        var queue = depth.SampledAt == DateTimeOffset.MinValue
            ? string.Empty
            : FormattableString.Invariant($"; queue: {depth.Pending} pending, {depth.Running} running, {depth.Failed} failed");
        var seconds = Math.Max(1, (long)Math.Round((now - since).TotalSeconds));
        LogSummary(
            seconds,
            activity.Succeeded,
            activity.Retried,
            activity.Failed,
            activity.Discarded,
            activity.InputTokens + activity.OutputTokens,
            activity.InputTokens,
            activity.OutputTokens,
            queue);
        return now;
    }

    private void Count(string instrument, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        switch (instrument)
        {
            case PgLlmMetrics.SucceededName:
                Interlocked.Add(ref _succeeded, value);
                break;
            case PgLlmMetrics.RetriedName:
                Interlocked.Add(ref _retried, value);
                break;
            case PgLlmMetrics.FailedName:
                Interlocked.Add(ref _failed, value);
                break;
            case PgLlmMetrics.DiscardedName:
                Interlocked.Add(ref _discarded, value);
                break;
            default:
                foreach (var tag in tags)
                {
                    if (tag.Key == "gen_ai.token.type")
                    {
                        if (tag.Value as string == "input")
                        {
                            Interlocked.Add(ref _inputTokens, value);
                        }
                        else if (tag.Value as string == "output")
                        {
                            Interlocked.Add(ref _outputTokens, value);
                        }

                        break;
                    }
                }

                break;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "PgLlm in the last {Seconds} s: {Succeeded} jobs succeeded, {Retried} retried, {Failed} failed, {Discarded} discarded; {Tokens} tokens ({InputTokens} input, {OutputTokens} output){Queue}")]
    private partial void LogSummary(long seconds, long succeeded, long retried, long failed, long discarded, long tokens, long inputTokens, long outputTokens, string queue);

    /// <summary>Counts of one period.</summary>
    internal readonly record struct Counts(long Succeeded, long Retried, long Failed, long Discarded, long InputTokens, long OutputTokens)
    {
        public bool IsEmpty => Succeeded == 0 && Retried == 0 && Failed == 0 && Discarded == 0 && InputTokens == 0 && OutputTokens == 0;
    }
}
