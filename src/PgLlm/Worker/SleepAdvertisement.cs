using System.Diagnostics;
using Npgsql;

namespace PgLlm.Worker;

/// <summary>
/// Tells enqueuing transactions whether this worker sleeps, so that they notify only then (see
/// <c>llm.wake_workers</c> in the core script): each NOTIFY serializes its transaction's commit with
/// every other notifying commit, so a busy worker, which claims again after each batch anyway, is not
/// notified.
/// </summary>
internal sealed class SleepAdvertisement
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _workerId;
    private bool _advertised;
    private long _advertisedAt;

    public SleepAdvertisement(NpgsqlDataSource dataSource, string workerId)
    {
        _dataSource = dataSource;
        _workerId = workerId;
    }

    /// <summary>
    /// True once enqueuers notify this worker and no transaction that enqueued without notifying is
    /// still open: after one more claim finds nothing, the worker may sleep until NOTIFY. Reset after each sleep.
    /// </summary>
    public bool Safe { get; set; }

    /// <summary>
    /// Safe, and advertised less than a minute ago: a worker that keeps up with a trickle of jobs may stay
    /// advertised between them, but refreshes the advertisement now and then (stale ones are dropped after an hour).
    /// </summary>
    public bool SafeAndFresh => Safe && Stopwatch.GetElapsedTime(_advertisedAt) < TimeSpan.FromMinutes(1);

    /// <summary>
    /// Advertises that the worker is about to sleep, then (in a second transaction, so that the
    /// advertisement is visible first) checks whether every enqueuer that missed it has ended. One round trip.
    /// </summary>
    public async Task<bool> AdvertiseAsync(CancellationToken cancellationToken)
    {
        await using var batch = _dataSource.CreateBatch();
        // Each statement its own implicit transaction: the advertisement commits before the check.
        batch.EnableErrorBarriers = true;
        var advertise = new NpgsqlBatchCommand("SELECT llm.worker_sleeps($1)");
        advertise.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _workerId });
        batch.BatchCommands.Add(advertise);
        batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT llm.enqueuers_settled()"));
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        _advertised = true;
        _advertisedAt = Stopwatch.GetTimestamp();
        await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        Safe = reader.GetBoolean(0);
        return Safe;
    }

    /// <summary>The worker has work again, or stops: enqueuers stop notifying it.</summary>
    public async Task WithdrawAsync(CancellationToken cancellationToken)
    {
        Safe = false;
        if (!_advertised)
        {
            return;
        }

        await using var command = _dataSource.CreateCommand("SELECT llm.worker_wakes($1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _workerId });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        _advertised = false;
    }
}
