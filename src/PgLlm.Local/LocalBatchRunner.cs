using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>
/// Processes batches in the background: validates the input file, answers its lines one by one through the
/// server's chat-completions path, and writes the output and error files, all streamed (bounded memory).
/// </summary>
internal sealed class LocalBatchRunner
{
    private const int MaxValidationErrors = 100;
    private const string FailedLineMessage = "The server had an error while processing your request. Sorry about that!";

    private readonly LocalModelServer _server;
    private readonly LocalFileStore _files;
    private long _nextRequest;

    public LocalBatchRunner(LocalModelServer server, LocalFileStore files)
    {
        _server = server;
        _files = files;
    }

    /// <summary>Runs <paramref name="batch"/> to its end (or until <paramref name="stopping"/>); never throws.</summary>
    public async Task RunAsync(LocalBatch batch, LocalFile input, CancellationToken stopping)
    {
        try
        {
            var (total, errors) = await RunLongAsync(() => Validate(input.Path, stopping), stopping).ConfigureAwait(false);
            if (errors.Count > 0)
            {
                batch.Fail(errors);
                return;
            }

            if (batch.CancelRequested)
            {
                batch.Finish(null, null, expired: false);
                return;
            }

            var started = DateTimeOffset.UtcNow;
            batch.Start(total);
            var outcome = await RunLongAsync(() => Process(batch, input.Path, stopping), stopping).ConfigureAwait(false);
            var expired = outcome.Expired || await WaitCompletionDelayAsync(batch, started, stopping).ConfigureAwait(false);
            batch.BeginFinalizing();
            var outputFileId = Register(outcome.Output, batch.Id + "_output.jsonl");
            var errorFileId = Register(outcome.Errors, batch.Id + "_error.jsonl");
            batch.Finish(outputFileId, errorFileId, expired);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // The server is stopping; its directory goes with it.
        }
#pragma warning disable CA1031 // A batch that cannot be processed fails, like on the real service; the server goes on.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            batch.Fail([new LocalBatchError("server_error", $"The batch could not be processed: {ex.GetType().Name}: {ex.Message}", null)]);
        }
    }

    private static Task<T> RunLongAsync<T>(Func<T> work, CancellationToken stopping)
        => Task.Factory.StartNew(work, stopping, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private string? Register(LineFile file, string filename)
    {
        if (file.Lines == 0)
        {
            LocalFileStore.TryDeletePath(_files.PathFor(file.Id));
            return null;
        }

        return _files.Add(file.Id, filename, "batch_output").Id;
    }

    /// <summary>Waits out <see cref="LocalBatchSettings.CompletionDelay"/>; true when the batch expired meanwhile.</summary>
    private static async Task<bool> WaitCompletionDelayAsync(LocalBatch batch, DateTimeOffset started, CancellationToken stopping)
    {
        if (batch.CancelRequested)
        {
            return false;
        }

        var now = DateTimeOffset.UtcNow;
        var remaining = started + batch.Settings.CompletionDelay - now;
        if (remaining <= TimeSpan.Zero)
        {
            return false;
        }

        var untilExpiry = batch.ExpiresAt - now;
        var wait = untilExpiry < remaining ? untilExpiry : remaining;
        if (wait > TimeSpan.Zero)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(batch.CancelToken, stopping);
            try
            {
                await Task.Delay(wait, linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                stopping.ThrowIfCancellationRequested();
                return false; // cancelled
            }
        }

        return untilExpiry < remaining;
    }

    private static (int Total, List<LocalBatchError> Errors) Validate(string path, CancellationToken stopping)
    {
        var errors = new List<LocalBatchError>();
        var total = 0;
        var number = 0;
        using var reader = OpenReader(path);
        while (reader.ReadLine() is { } line)
        {
            number++;
            if ((number & 1023) == 0)
            {
                stopping.ThrowIfCancellationRequested();
            }

            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            var error = ValidateLine(line, number);
            if (error is null)
            {
                total++;
            }
            else if (errors.Count < MaxValidationErrors)
            {
                errors.Add(error);
            }
        }

        if (total == 0 && errors.Count == 0)
        {
            errors.Add(new LocalBatchError("empty_file", "The input file contains no requests.", null));
        }

        return (total, errors);
    }

    private static LocalBatchError? ValidateLine(string line, int number)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException)
        {
            return new LocalBatchError("invalid_json_line", $"Line {number} is not valid JSON.", number);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return new LocalBatchError("invalid_json_line", $"Line {number} is not a JSON object.", number);
            }

            if (!root.TryGetProperty("custom_id", out var customId) || customId.ValueKind != JsonValueKind.String || customId.GetString()!.Length == 0)
            {
                return new LocalBatchError("missing_required_parameter", $"Line {number} has no 'custom_id' string.", number);
            }

            if (!root.TryGetProperty("method", out var method) || !method.ValueEquals("POST"))
            {
                return new LocalBatchError("invalid_method", $"Line {number}: 'method' must be 'POST'.", number);
            }

            if (!root.TryGetProperty("url", out var url) || !url.ValueEquals(LocalBatchApi.ChatEndpoint))
            {
                return new LocalBatchError("invalid_url", $"Line {number}: 'url' must be '{LocalBatchApi.ChatEndpoint}', the batch's endpoint.", number);
            }

            if (!root.TryGetProperty("body", out var body) || body.ValueKind != JsonValueKind.Object)
            {
                return new LocalBatchError("missing_required_parameter", $"Line {number} has no 'body' object.", number);
            }

            return null;
        }
    }

    private LinesOutcome Process(LocalBatch batch, string inputPath, CancellationToken stopping)
    {
        var output = new LineFile(LocalFileStore.NewId());
        var errors = new LineFile(LocalFileStore.NewId());
        using var outputWriter = new LocalBatchLineWriter(_files.PathFor(output.Id));
        using var errorWriter = new LocalBatchLineWriter(_files.PathFor(errors.Id));
        using var reader = OpenReader(inputPath);
        var expireAfterLines = batch.Settings.ExpireAfterLines ?? int.MaxValue;
        var processed = 0;
        var expired = false;
        while (reader.ReadLine() is { } line)
        {
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            stopping.ThrowIfCancellationRequested();
            if (batch.CancelRequested)
            {
                break;
            }

            if (processed >= expireAfterLines || DateTimeOffset.UtcNow >= batch.ExpiresAt)
            {
                expired = true;
                break;
            }

            AnswerLine(batch, line, outputWriter, errorWriter);
            processed++;
        }

        output.Lines = outputWriter.Lines;
        errors.Lines = errorWriter.Lines;
        return new LinesOutcome(output, errors, expired);
    }

    private void AnswerLine(LocalBatch batch, string line, LocalBatchLineWriter output, LocalBatchLineWriter errors)
    {
        using var document = JsonDocument.Parse(line);
        var root = document.RootElement;
        var customId = root.GetProperty("custom_id").GetString()!;
        var fate = LocalModelServer.GetBatchLineFate(customId, batch.Settings.FailedFraction, batch.Settings.MissingFraction);
        if (fate == BatchLineFate.Missing)
        {
            return;
        }

        var number = Interlocked.Increment(ref _nextRequest).ToString("x8", CultureInfo.InvariantCulture);
        if (fate == BatchLineFate.Failed)
        {
            WriteErrorLine(errors, number, customId, ModelReply.Error(500, FailedLineMessage));
            batch.CountFailed();
            return;
        }

        var body = root.GetProperty("body");
        var (parsed, reply) = _server.AnswerBody(body.GetRawText(), body, DateTimeOffset.UtcNow);
        if (parsed is not null && reply.RawBody is null && reply.Content is not null)
        {
            var writer = BeginLine(output, number, customId, reply.StatusCode);
            ChatCompletionsProtocol.WriteCompletion(writer, _server.NextCompletionId(), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), parsed.Request, reply);
            EndLine(output);
            batch.CountCompleted();
        }
        else if (reply.RawBody is not null && reply.StatusCode < 400)
        {
            WriteRaw(BeginLine(output, number, customId, reply.StatusCode), reply.RawBody);
            EndLine(output);
            batch.CountCompleted();
        }
        else
        {
            WriteErrorLine(errors, number, customId, reply);
            batch.CountFailed();
        }
    }

    private static void WriteErrorLine(LocalBatchLineWriter errors, string number, string customId, ModelReply reply)
    {
        var writer = BeginLine(errors, number, customId, reply.StatusCode);
        if (reply.RawBody is not null)
        {
            WriteRaw(writer, reply.RawBody);
        }
        else
        {
            ChatCompletionsProtocol.WriteErrorBody(writer, reply.StatusCode, reply.ErrorMessage ?? "Error", reply.ErrorType);
        }

        EndLine(errors);
    }

    /// <summary>Starts <c>{"id","custom_id","response":{"status_code","request_id","body":</c>; the caller writes the body.</summary>
    private static Utf8JsonWriter BeginLine(LocalBatchLineWriter target, string number, string customId, int statusCode)
    {
        var writer = target.BeginLine();
        writer.WriteStartObject();
        writer.WriteString("id", "batch_req_" + number);
        writer.WriteString("custom_id", customId);
        writer.WriteStartObject("response");
        writer.WriteNumber("status_code", statusCode);
        writer.WriteString("request_id", "req_" + number);
        writer.WritePropertyName("body");
        return writer;
    }

    private static void EndLine(LocalBatchLineWriter target)
    {
        var writer = target.Writer;
        writer.WriteEndObject(); // response
        writer.WriteNull("error");
        writer.WriteEndObject();
        target.EndLine();
    }

    /// <summary>A raw reply body: as JSON when it is JSON, otherwise as a JSON string.</summary>
    private static void WriteRaw(Utf8JsonWriter writer, string raw)
    {
        try
        {
            using var document = JsonDocument.Parse(raw);
            document.RootElement.WriteTo(writer);
        }
        catch (JsonException)
        {
            writer.WriteStringValue(raw);
        }
    }

    private static StreamReader OpenReader(string path)
        => new(
            new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, bufferSize: 1 << 16),
            Encoding.UTF8,
            detectEncodingFromByteOrderMarks: true,
            bufferSize: 1 << 16);

    /// <summary>An output or error file being written: its id and, at the end, its line count.</summary>
    private sealed class LineFile(string id)
    {
        public string Id { get; } = id;

        public int Lines { get; set; }
    }

    private sealed record LinesOutcome(LineFile Output, LineFile Errors, bool Expired);
}
