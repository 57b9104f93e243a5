namespace PgLlm.Local;

/// <summary>The Batch API knobs, counters and snapshots of <see cref="LocalModelServer"/>.</summary>
public sealed partial class LocalModelServer
{
    private long _batchCompletionDelayTicks;
    private double _batchFailedLineFraction;
    private double _batchMissingLineFraction;
    private long _batchExpiresAfterTicks = -1;
    private int _batchExpireAfterLines = -1;
    private int _holdAfterUpload;
    private int _holdAfterBatchCreate;

    /// <summary>
    /// A batch stays <c>in_progress</c> at least this long after validation (its lines are answered first, then it
    /// waits). Thread-safe; read when a batch is created. Default <see cref="LocalModelServerOptions.BatchCompletionDelay"/> (zero).
    /// </summary>
    public TimeSpan BatchCompletionDelay
    {
        get => new(Interlocked.Read(ref _batchCompletionDelayTicks));
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.Zero);
            Interlocked.Exchange(ref _batchCompletionDelayTicks, value.Ticks);
        }
    }

    /// <summary>
    /// Share (0..1) of batch lines written to the error file with a 500 <c>server_error</c> body instead of being
    /// answered; which lines is decided by <see cref="GetBatchLineFate"/>. Thread-safe; read when a batch is created. Default 0.
    /// </summary>
    public double BatchFailedLineFraction
    {
        get => Volatile.Read(ref _batchFailedLineFraction);
        set => Volatile.Write(ref _batchFailedLineFraction, CheckFraction(value));
    }

    /// <summary>
    /// Share (0..1) of batch lines left out of both the output and the error file; which lines is decided by
    /// <see cref="GetBatchLineFate"/>. Thread-safe; read when a batch is created. Default 0.
    /// </summary>
    public double BatchMissingLineFraction
    {
        get => Volatile.Read(ref _batchMissingLineFraction);
        set => Volatile.Write(ref _batchMissingLineFraction, CheckFraction(value));
    }

    /// <summary>
    /// When set, batches created from now on get <c>expires_at</c> = creation + this, and expire then if not
    /// finished (also while waiting out <see cref="BatchCompletionDelay"/>): status <c>expired</c>, <c>expired_at</c>
    /// set, the output and error files holding only the lines done before. <see cref="TimeSpan.Zero"/> makes them
    /// expire with no line done. Null (default): 24 hours, as the real service. Thread-safe.
    /// </summary>
    public TimeSpan? BatchExpiresAfter
    {
        get => Interlocked.Read(ref _batchExpiresAfterTicks) is var ticks and >= 0 ? new TimeSpan(ticks) : null;
        set
        {
            if (value is { } after)
            {
                ArgumentOutOfRangeException.ThrowIfLessThan(after, TimeSpan.Zero);
            }

            Interlocked.Exchange(ref _batchExpiresAfterTicks, value?.Ticks ?? -1);
        }
    }

    /// <summary>
    /// When set, batches created from now on expire after this many lines were processed (answered, failed or
    /// left out), like <see cref="BatchExpiresAfter"/> but counted, for exact tests; a batch with no more lines
    /// than this completes. Null (default): no such limit. Thread-safe.
    /// </summary>
    public int? BatchExpireAfterLines
    {
        get => Volatile.Read(ref _batchExpireAfterLines) is var lines and >= 0 ? lines : null;
        set
        {
            if (value is { } lines)
            {
                ArgumentOutOfRangeException.ThrowIfNegative(lines);
            }

            Volatile.Write(ref _batchExpireAfterLines, value ?? -1);
        }
    }

    /// <summary>
    /// When true, <c>POST /v1/files</c> stores the file (listed, counted in <see cref="FileUploads"/>) and then never
    /// answers: the request hangs until the client gives up or the server is disposed. Thread-safe; default false.
    /// </summary>
    public bool HoldAfterUpload
    {
        get => Volatile.Read(ref _holdAfterUpload) != 0;
        set => Volatile.Write(ref _holdAfterUpload, value ? 1 : 0);
    }

    /// <summary>
    /// When true, <c>POST /v1/batches</c> creates and starts the batch (counted in <see cref="BatchesCreated"/>) and
    /// then never answers: the request hangs until the client gives up or the server is disposed. Thread-safe; default false.
    /// </summary>
    public bool HoldAfterBatchCreate
    {
        get => Volatile.Read(ref _holdAfterBatchCreate) != 0;
        set => Volatile.Write(ref _holdAfterBatchCreate, value ? 1 : 0);
    }

    /// <summary>Files stored by <c>POST /v1/files</c> since start (rejected uploads not counted).</summary>
    public int FileUploads => _batchApi.FileUploads;

    /// <summary>Batches created by <c>POST /v1/batches</c> since start.</summary>
    public int BatchesCreated => _batchApi.BatchesCreated;

    /// <summary>Accepted <c>POST /v1/batches/{id}/cancel</c> requests since start.</summary>
    public int BatchCancels => _batchApi.BatchCancels;

    /// <summary>Snapshots of all batches since start, oldest first.</summary>
    public IReadOnlyList<LocalBatchInfo> Batches => _batchApi.Batches;

    /// <summary>The temporary directory holding the Files API's content (removed on dispose).</summary>
    internal string FilesDirectory => _batchApi.FilesDirectory;

    /// <summary>Cancelled when the server stops.</summary>
    internal CancellationToken Stopping => _app.Lifetime.ApplicationStopping;

    /// <summary>
    /// What the server does with the batch line <paramref name="customId"/> given the two fractions, so tests can
    /// count: with <c>u</c> = <see cref="DeterministicModel.StableHash"/>(<paramref name="customId"/>) / 2^32,
    /// <see cref="BatchLineFate.Failed"/> when <c>u &lt; failed</c>, <see cref="BatchLineFate.Missing"/> when
    /// <c>u &lt; failed + missing</c>, else <see cref="BatchLineFate.Answered"/>.
    /// </summary>
    /// <param name="customId">The line's <c>custom_id</c>.</param>
    /// <param name="failedLineFraction">See <see cref="BatchFailedLineFraction"/>.</param>
    /// <param name="missingLineFraction">See <see cref="BatchMissingLineFraction"/>.</param>
    /// <returns>The line's fate.</returns>
    public static BatchLineFate GetBatchLineFate(string customId, double failedLineFraction, double missingLineFraction)
    {
        ArgumentNullException.ThrowIfNull(customId);
        if (failedLineFraction <= 0 && missingLineFraction <= 0)
        {
            return BatchLineFate.Answered;
        }

        var u = LocalBatch.Hash(customId) / 4294967296.0;
        return u < failedLineFraction ? BatchLineFate.Failed
            : u < failedLineFraction + missingLineFraction ? BatchLineFate.Missing
            : BatchLineFate.Answered;
    }

    private void InitializeBatchKnobs(LocalModelServerOptions options)
    {
        BatchCompletionDelay = options.BatchCompletionDelay;
        BatchFailedLineFraction = options.BatchFailedLineFraction;
        BatchMissingLineFraction = options.BatchMissingLineFraction;
    }

    private void ResetBatchKnobs()
    {
        BatchCompletionDelay = TimeSpan.Zero;
        BatchFailedLineFraction = 0;
        BatchMissingLineFraction = 0;
        BatchExpiresAfter = null;
        BatchExpireAfterLines = null;
        HoldAfterUpload = false;
        HoldAfterBatchCreate = false;
    }

    private static double CheckFraction(double value)
    {
        if (double.IsNaN(value) || value < 0 || value > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(value), value, "A fraction must be between 0 and 1.");
        }

        return value;
    }
}
