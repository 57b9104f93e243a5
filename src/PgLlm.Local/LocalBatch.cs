using System.Text;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>What the local server does with one line of a batch (see <see cref="LocalModelServer.GetBatchLineFate"/>).</summary>
public enum BatchLineFate
{
    /// <summary>Answered like a chat-completions request (output file, or error file when the answer is an error).</summary>
    Answered,

    /// <summary>Written to the error file with a 500 <c>server_error</c> body (<see cref="LocalModelServer.BatchFailedLineFraction"/>).</summary>
    Failed,

    /// <summary>In neither file (<see cref="LocalModelServer.BatchMissingLineFraction"/>).</summary>
    Missing,
}

/// <summary>A snapshot of one batch of <see cref="LocalModelServer"/> (see <see cref="LocalModelServer.Batches"/>).</summary>
/// <param name="Id">The <c>batch_…</c> id.</param>
/// <param name="Status"><c>validating</c>, <c>failed</c>, <c>in_progress</c>, <c>finalizing</c>, <c>completed</c>, <c>expired</c>, <c>cancelling</c> or <c>cancelled</c>.</param>
/// <param name="InputFileId">The input file.</param>
/// <param name="OutputFileId">The output file once finished, or null (not finished, or no line in it).</param>
/// <param name="ErrorFileId">The error file once finished, or null (not finished, or no line in it).</param>
/// <param name="Total"><c>request_counts.total</c>: lines of the input (0 while validating).</param>
/// <param name="Completed"><c>request_counts.completed</c>: lines written to the output file so far.</param>
/// <param name="Failed"><c>request_counts.failed</c>: lines written to the error file so far.</param>
/// <param name="Metadata">The metadata given at creation, or null.</param>
/// <param name="Errors">Messages of the batch's <c>errors</c> (validation failures); empty otherwise.</param>
public sealed record LocalBatchInfo(
    string Id,
    string Status,
    string InputFileId,
    string? OutputFileId,
    string? ErrorFileId,
    int Total,
    int Completed,
    int Failed,
    IReadOnlyDictionary<string, string>? Metadata,
    IReadOnlyList<string> Errors);

/// <summary>One entry of a batch's <c>errors.data</c>.</summary>
internal sealed record LocalBatchError(string Code, string Message, int? Line);

/// <summary>Settings captured when a batch is created (later changes to the knobs do not affect it).</summary>
internal sealed record LocalBatchSettings(double FailedFraction, double MissingFraction, TimeSpan CompletionDelay, int? ExpireAfterLines);

/// <summary>The state of one batch: immutable creation fields, a lock for the status, interlocked counts.</summary>
internal sealed class LocalBatch : IDisposable
{
    public const string Validating = "validating";
    public const string FailedStatus = "failed";
    public const string InProgress = "in_progress";
    public const string Finalizing = "finalizing";
    public const string CompletedStatus = "completed";
    public const string Expired = "expired";
    public const string Cancelling = "cancelling";
    public const string Cancelled = "cancelled";

    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _cancel = new();
    private readonly List<LocalBatchError> _errors = [];
    private string _status = Validating;
    private long? _inProgressAt;
    private long? _finalizingAt;
    private long? _completedAt;
    private long? _failedAt;
    private long? _expiredAt;
    private long? _cancellingAt;
    private long? _cancelledAt;
    private string? _outputFileId;
    private string? _errorFileId;
    private int _total;
    private int _completed;
    private int _failed;

    public LocalBatch(string id, string inputFileId, IReadOnlyDictionary<string, string>? metadata, DateTimeOffset expiresAt, LocalBatchSettings settings)
    {
        Id = id;
        InputFileId = inputFileId;
        Metadata = metadata;
        CreatedAt = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        ExpiresAt = expiresAt;
        Settings = settings;
    }

    public string Id { get; }

    public string InputFileId { get; }

    public IReadOnlyDictionary<string, string>? Metadata { get; }

    public long CreatedAt { get; }

    /// <summary>When the batch expires if not finished by then.</summary>
    public DateTimeOffset ExpiresAt { get; }

    public LocalBatchSettings Settings { get; }

    /// <summary>Cancelled when a cancel was requested.</summary>
    public CancellationToken CancelToken => _cancel.Token;

    public bool CancelRequested => _cancel.IsCancellationRequested;

    /// <summary>The background processing, set once started.</summary>
    public Task? Processing { get; set; }

    public string Status
    {
        get
        {
            lock (_gate)
            {
                return _status;
            }
        }
    }

    public void CountCompleted() => Interlocked.Increment(ref _completed);

    public void CountFailed() => Interlocked.Increment(ref _failed);

    /// <summary>Validation passed: <c>in_progress</c> with <paramref name="total"/> requests (unless a cancel came first).</summary>
    public void Start(int total)
    {
        lock (_gate)
        {
            _total = total;
            _inProgressAt = Now();
            if (_status == Validating)
            {
                _status = InProgress;
            }
        }
    }

    /// <summary>All lines done: <c>finalizing</c> (unless cancelling).</summary>
    public void BeginFinalizing()
    {
        lock (_gate)
        {
            if (_status == InProgress)
            {
                _status = Finalizing;
                _finalizingAt = Now();
            }
        }
    }

    /// <summary>Ends the batch: <c>expired</c> when <paramref name="expired"/>, else <c>cancelled</c> when a cancel was requested, else <c>completed</c>.</summary>
    public void Finish(string? outputFileId, string? errorFileId, bool expired)
    {
        lock (_gate)
        {
            _outputFileId = outputFileId;
            _errorFileId = errorFileId;
            var now = Now();
            if (expired)
            {
                _status = Expired;
                _expiredAt = now;
            }
            else if (CancelRequested)
            {
                _status = Cancelled;
                _cancelledAt = now;
            }
            else
            {
                _finalizingAt ??= now;
                _status = CompletedStatus;
                _completedAt = now;
            }
        }
    }

    /// <summary>Validation (or processing) failed: <c>failed</c> with <paramref name="errors"/>.</summary>
    public void Fail(IEnumerable<LocalBatchError> errors)
    {
        lock (_gate)
        {
            _errors.AddRange(errors);
            _status = FailedStatus;
            _failedAt = Now();
        }
    }

    /// <summary>A cancel request: <c>cancelling</c> and the processing told to stop. False when already finished.</summary>
    public bool RequestCancel()
    {
        lock (_gate)
        {
            if (_status is not (Validating or InProgress or Finalizing or Cancelling))
            {
                return false;
            }

            if (_status != Cancelling)
            {
                _status = Cancelling;
                _cancellingAt = Now();
            }
        }

        _cancel.Cancel();
        return true;
    }

    public LocalBatchInfo Snapshot()
    {
        lock (_gate)
        {
            return new LocalBatchInfo(
                Id,
                _status,
                InputFileId,
                _outputFileId,
                _errorFileId,
                _total,
                Volatile.Read(ref _completed),
                Volatile.Read(ref _failed),
                Metadata,
                _errors.Select(e => e.Message).ToList());
        }
    }

    /// <summary>Writes the OpenAI batch object.</summary>
    public void WriteJson(Utf8JsonWriter writer)
    {
        lock (_gate)
        {
            writer.WriteStartObject();
            writer.WriteString("id", Id);
            writer.WriteString("object", "batch");
            writer.WriteString("endpoint", LocalBatchApi.ChatEndpoint);
            WriteErrors(writer);
            writer.WriteString("input_file_id", InputFileId);
            writer.WriteString("completion_window", "24h");
            writer.WriteString("status", _status);
            ChatCompletionsProtocol.WriteNullableString(writer, "output_file_id", _outputFileId);
            ChatCompletionsProtocol.WriteNullableString(writer, "error_file_id", _errorFileId);
            writer.WriteNumber("created_at", CreatedAt);
            WriteTime(writer, "in_progress_at", _inProgressAt);
            writer.WriteNumber("expires_at", ExpiresAt.ToUnixTimeSeconds());
            WriteTime(writer, "finalizing_at", _finalizingAt);
            WriteTime(writer, "completed_at", _completedAt);
            WriteTime(writer, "failed_at", _failedAt);
            WriteTime(writer, "expired_at", _expiredAt);
            WriteTime(writer, "cancelling_at", _cancellingAt);
            WriteTime(writer, "cancelled_at", _cancelledAt);
            writer.WriteStartObject("request_counts");
            writer.WriteNumber("total", _total);
            writer.WriteNumber("completed", Volatile.Read(ref _completed));
            writer.WriteNumber("failed", Volatile.Read(ref _failed));
            writer.WriteEndObject();
            WriteMetadata(writer);
            writer.WriteEndObject();
        }
    }

    public void Dispose() => _cancel.Dispose();

    /// <summary>FNV-1a of the UTF-8 bytes, like <see cref="DeterministicModel.StableHash"/>, without allocating for short ids.</summary>
    public static uint Hash(string text)
    {
        var max = Encoding.UTF8.GetMaxByteCount(text.Length);
        Span<byte> bytes = max <= 512 ? stackalloc byte[max] : new byte[max];
        var length = Encoding.UTF8.GetBytes(text, bytes);
        var hash = 2166136261u;
        foreach (var b in bytes[..length])
        {
            hash ^= b;
            hash *= 16777619u;
        }

        return hash;
    }

    private void WriteErrors(Utf8JsonWriter writer)
    {
        if (_errors.Count == 0)
        {
            writer.WriteNull("errors");
            return;
        }

        writer.WriteStartObject("errors");
        writer.WriteString("object", "list");
        writer.WriteStartArray("data");
        foreach (var error in _errors)
        {
            writer.WriteStartObject();
            writer.WriteString("code", error.Code);
            writer.WriteString("message", error.Message);
            writer.WriteNull("param");
            if (error.Line is { } line)
            {
                writer.WriteNumber("line", line);
            }
            else
            {
                writer.WriteNull("line");
            }

            writer.WriteEndObject();
        }

        writer.WriteEndArray();
        writer.WriteEndObject();
    }

    private void WriteMetadata(Utf8JsonWriter writer)
    {
        if (Metadata is null)
        {
            writer.WriteNull("metadata");
            return;
        }

        writer.WriteStartObject("metadata");
        foreach (var (key, value) in Metadata)
        {
            writer.WriteString(key, value);
        }

        writer.WriteEndObject();
    }

    private static void WriteTime(Utf8JsonWriter writer, string name, long? value)
    {
        if (value is { } seconds)
        {
            writer.WriteNumber(name, seconds);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();
}
