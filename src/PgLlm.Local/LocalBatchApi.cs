using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;

namespace PgLlm.Local;

/// <summary>
/// The OpenAI Files and Batch APIs of <see cref="LocalModelServer"/>: <c>/v1/files</c> and <c>/v1/batches</c>.
/// Metadata lives in memory, content in a temporary directory; batches run in the background.
/// </summary>
internal sealed class LocalBatchApi : IAsyncDisposable
{
    /// <summary>The only endpoint batches accept.</summary>
    public const string ChatEndpoint = "/v1/chat/completions";

    private const string JsonContentType = "application/json";
    private const int MaxMetadataPairs = 16;

    private readonly LocalModelServer _server;
    private readonly LocalFileStore _files = new();
    private readonly LocalBatchRunner _runner;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private readonly List<LocalBatch> _batches = [];
    private readonly Dictionary<string, LocalBatch> _batchesById = new(StringComparer.Ordinal);
    private int _fileUploads;
    private int _batchesCreated;
    private int _batchCancels;

    public LocalBatchApi(LocalModelServer server)
    {
        _server = server;
        _runner = new LocalBatchRunner(server, _files);
    }

    public int FileUploads => Volatile.Read(ref _fileUploads);

    public string FilesDirectory => _files.Root;

    public int BatchesCreated => Volatile.Read(ref _batchesCreated);

    public int BatchCancels => Volatile.Read(ref _batchCancels);

    /// <summary>Snapshots of all batches, oldest first.</summary>
    public IReadOnlyList<LocalBatchInfo> Batches
    {
        get
        {
            lock (_gate)
            {
                return _batches.Select(b => b.Snapshot()).ToList();
            }
        }
    }

    /// <summary>Maps the endpoints under <c>/v1</c> and, like chat completions, without the prefix.</summary>
    public void Map(IEndpointRouteBuilder app)
    {
        foreach (var prefix in new[] { "/v1", string.Empty })
        {
            app.MapPost(prefix + "/files", Authorized(UploadAsync));
            app.MapGet(prefix + "/files", Authorized(ListFilesAsync));
            app.MapGet(prefix + "/files/{id}", Authorized(GetFileAsync));
            app.MapGet(prefix + "/files/{id}/content", Authorized(GetFileContentAsync));
            app.MapDelete(prefix + "/files/{id}", Authorized(DeleteFileAsync));
            app.MapPost(prefix + "/batches", Authorized(CreateBatchAsync));
            app.MapGet(prefix + "/batches", Authorized(ListBatchesAsync));
            app.MapGet(prefix + "/batches/{id}", Authorized(GetBatchAsync));
            app.MapPost(prefix + "/batches/{id}/cancel", Authorized(CancelBatchAsync));
        }
    }

    /// <summary>Stops the running batches and removes the files' directory. Never throws.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        Task[] running;
        lock (_gate)
        {
            running = _batches.Select(b => b.Processing).OfType<Task>().ToArray();
        }

        await Task.WhenAny(Task.WhenAll(running), Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        lock (_gate)
        {
            foreach (var batch in _batches)
            {
                batch.Dispose();
            }
        }

        _files.Dispose();
        _stopping.Dispose();
    }

    private RequestDelegate Authorized(RequestDelegate handler)
        => context => _server.IsAuthorized(context)
            ? handler(context)
            : LocalModelServer.WriteErrorAsync(context, ModelReply.Error(401, "Incorrect API key provided."));

    private async Task UploadAsync(HttpContext context)
    {
        var (file, error, param) = await ReceiveUploadAsync(context).ConfigureAwait(false);
        if (file is null)
        {
            await LocalModelServer.WriteErrorAsync(context, ModelReply.Error(400, error!), param).ConfigureAwait(false);
            return;
        }

        Interlocked.Increment(ref _fileUploads);
        if (_server.HoldAfterUpload)
        {
            await HoldAsync(context).ConfigureAwait(false);
            return;
        }

        await WriteJsonAsync(context, 200, file.WriteJson).ConfigureAwait(false);
    }

    /// <summary>Streams the multipart <c>file</c> part to the store; the stored file, or an error and its parameter.</summary>
    private async Task<(LocalFile? File, string? Error, string? Param)> ReceiveUploadAsync(HttpContext context)
    {
        if (!MediaTypeHeaderValue.TryParse(context.Request.ContentType, out var mediaType)
            || !mediaType.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            || HeaderUtilities.RemoveQuotes(mediaType.Boundary).Value is not { Length: > 0 } boundary)
        {
            return (null, "Uploads must be multipart/form-data with 'purpose' and 'file' fields.", null);
        }

        var id = LocalFileStore.NewId();
        var path = _files.PathFor(id);
        string? purpose = null;
        string? filename = null;
        try
        {
            var reader = new MultipartReader(boundary, context.Request.Body) { BodyLengthLimit = null }; // Kestrel's limit applies
            while (await reader.ReadNextSectionAsync(context.RequestAborted).ConfigureAwait(false) is { } section)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var disposition))
                {
                    continue;
                }

                var name = HeaderUtilities.RemoveQuotes(disposition.Name).Value;
                if (name == "file" && filename is null)
                {
                    filename = HeaderUtilities.RemoveQuotes(disposition.FileNameStar.HasValue ? disposition.FileNameStar : disposition.FileName).Value ?? "upload.jsonl";
                    await using var target = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 16, useAsync: true);
                    await section.Body.CopyToAsync(target, context.RequestAborted).ConfigureAwait(false);
                }
                else if (name == "purpose")
                {
                    using var text = new StreamReader(section.Body);
                    purpose = (await text.ReadToEndAsync(context.RequestAborted).ConfigureAwait(false)).Trim();
                }
            }
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException)
        {
            LocalFileStore.TryDeletePath(path);
            return (null, "The multipart body could not be read: " + ex.Message, null);
        }
        catch (OperationCanceledException)
        {
            LocalFileStore.TryDeletePath(path); // the client went away mid-upload
            throw;
        }

        var problem = filename is null ? ("Missing required parameter: 'file'.", "file")
            : purpose is null ? ("Missing required parameter: 'purpose'.", "purpose")
            : purpose != "batch" ? ($"Invalid purpose '{purpose}': this server accepts only 'batch'.", "purpose")
            : ((string?)null, (string?)null);
        if (problem.Item1 is not null)
        {
            LocalFileStore.TryDeletePath(path);
            return (null, problem.Item1, problem.Item2);
        }

        return (_files.Add(id, filename!, purpose!), null, null);
    }

    private Task ListFilesAsync(HttpContext context)
    {
        var purpose = context.Request.Query["purpose"].ToString();
        var files = _files.List(purpose.Length == 0 ? null : purpose);
        return WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteStartObject();
            writer.WriteString("object", "list");
            writer.WriteStartArray("data");
            foreach (var file in files)
            {
                file.WriteJson(writer);
            }

            writer.WriteEndArray();
            writer.WriteBoolean("has_more", false);
            writer.WriteEndObject();
        });
    }

    private Task GetFileAsync(HttpContext context)
        => TryGetFile(context, out var file) ? WriteJsonAsync(context, 200, file.WriteJson) : FileNotFoundAsync(context);

    private async Task GetFileContentAsync(HttpContext context)
    {
        if (!TryGetFile(context, out var file))
        {
            await FileNotFoundAsync(context).ConfigureAwait(false);
            return;
        }

        context.Response.ContentType = "application/octet-stream";
        context.Response.ContentLength = file.Bytes;
        try
        {
            await context.Response.SendFileAsync(file.Path, context.RequestAborted).ConfigureAwait(false);
        }
        catch (FileNotFoundException) when (!context.Response.HasStarted)
        {
            context.Response.ContentLength = null;
            await FileNotFoundAsync(context).ConfigureAwait(false);
        }
    }

    private Task DeleteFileAsync(HttpContext context)
    {
        var id = RouteId(context);
        if (!_files.Delete(id))
        {
            return FileNotFoundAsync(context);
        }

        return WriteJsonAsync(context, 200, writer =>
        {
            writer.WriteStartObject();
            writer.WriteString("id", id);
            writer.WriteString("object", "file");
            writer.WriteBoolean("deleted", true);
            writer.WriteEndObject();
        });
    }

    private async Task CreateBatchAsync(HttpContext context)
    {
        var (request, error, status, param) = await ReadBatchRequestAsync(context).ConfigureAwait(false);
        if (request is null)
        {
            await LocalModelServer.WriteErrorAsync(context, ModelReply.Error(status, error!), param).ConfigureAwait(false);
            return;
        }

        var settings = new LocalBatchSettings(
            _server.BatchFailedLineFraction,
            _server.BatchMissingLineFraction,
            _server.BatchCompletionDelay,
            _server.BatchExpireAfterLines);
        var expiresAt = DateTimeOffset.UtcNow + (_server.BatchExpiresAfter ?? TimeSpan.FromHours(24));
        var batch = new LocalBatch("batch_" + Guid.NewGuid().ToString("N"), request.File.Id, request.Metadata, expiresAt, settings);
        lock (_gate)
        {
            _batches.Add(batch);
            _batchesById[batch.Id] = batch;
            batch.Processing = Task.Run(() => _runner.RunAsync(batch, request.File, _stopping.Token));
        }

        Interlocked.Increment(ref _batchesCreated);
        if (_server.HoldAfterBatchCreate)
        {
            await HoldAsync(context).ConfigureAwait(false);
            return;
        }

        await WriteJsonAsync(context, 200, batch.WriteJson).ConfigureAwait(false);
    }

    /// <summary>Reads and checks the body of <c>POST /v1/batches</c>; the request, or an error with status and parameter.</summary>
    private async Task<(BatchRequest? Request, string? Error, int Status, string? Param)> ReadBatchRequestAsync(HttpContext context)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException ex)
        {
            return (null, "Invalid JSON body: " + ex.Message, 400, null);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("input_file_id", out var inputFileId) || inputFileId.ValueKind != JsonValueKind.String)
            {
                return (null, "Missing required parameter: 'input_file_id'.", 400, "input_file_id");
            }

            if (!root.TryGetProperty("endpoint", out var endpoint) || !endpoint.ValueEquals(ChatEndpoint))
            {
                return (null, $"Invalid 'endpoint': this server supports only '{ChatEndpoint}'.", 400, "endpoint");
            }

            if (!root.TryGetProperty("completion_window", out var window) || !window.ValueEquals("24h"))
            {
                return (null, "Invalid 'completion_window': only '24h' is supported.", 400, "completion_window");
            }

            if (!TryReadMetadata(root, out var metadata))
            {
                return (null, $"Invalid 'metadata': an object of at most {MaxMetadataPairs} string values.", 400, "metadata");
            }

            var id = inputFileId.GetString()!;
            if (!_files.TryGet(id, out var file))
            {
                return (null, $"No such File object: {id}", 404, "input_file_id");
            }

            if (file.Purpose != "batch")
            {
                return (null, $"File {id} has purpose '{file.Purpose}', not 'batch'.", 400, "input_file_id");
            }

            return (new BatchRequest(file, metadata), null, 200, null);
        }
    }

    private static bool TryReadMetadata(JsonElement root, out IReadOnlyDictionary<string, string>? metadata)
    {
        metadata = null;
        if (!root.TryGetProperty("metadata", out var element) || element.ValueKind == JsonValueKind.Null)
        {
            return true;
        }

        if (element.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in element.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.String || pairs.Count == MaxMetadataPairs)
            {
                return false;
            }

            pairs[property.Name] = property.Value.GetString()!;
        }

        metadata = pairs;
        return true;
    }

    private Task GetBatchAsync(HttpContext context)
        => TryGetBatch(context, out var batch) ? WriteJsonAsync(context, 200, batch.WriteJson) : BatchNotFoundAsync(context);

    private Task ListBatchesAsync(HttpContext context)
    {
        var limitText = context.Request.Query["limit"].ToString();
        var limit = 20;
        if (limitText.Length > 0 && (!int.TryParse(limitText, out limit) || limit < 1 || limit > 100))
        {
            return LocalModelServer.WriteErrorAsync(context, ModelReply.Error(400, "Invalid 'limit': an integer from 1 to 100."), "limit");
        }

        var after = context.Request.Query["after"].ToString();
        List<LocalBatch> page;
        bool hasMore;
        lock (_gate)
        {
            var newestFirst = Enumerable.Reverse(_batches);
            if (after.Length > 0)
            {
                newestFirst = newestFirst.SkipWhile(b => b.Id != after).Skip(1);
            }

            var candidates = newestFirst.Take(limit + 1).ToList();
            hasMore = candidates.Count > limit;
            page = candidates.Take(limit).ToList();
        }

        return WriteJsonAsync(context, 200, writer => WriteBatchList(writer, page, hasMore));
    }

    private static void WriteBatchList(Utf8JsonWriter writer, List<LocalBatch> page, bool hasMore)
    {
        writer.WriteStartObject();
        writer.WriteString("object", "list");
        writer.WriteStartArray("data");
        foreach (var batch in page)
        {
            batch.WriteJson(writer);
        }

        writer.WriteEndArray();
        ChatCompletionsProtocol.WriteNullableString(writer, "first_id", page.Count == 0 ? null : page[0].Id);
        ChatCompletionsProtocol.WriteNullableString(writer, "last_id", page.Count == 0 ? null : page[^1].Id);
        writer.WriteBoolean("has_more", hasMore);
        writer.WriteEndObject();
    }

    private Task CancelBatchAsync(HttpContext context)
    {
        if (!TryGetBatch(context, out var batch))
        {
            return BatchNotFoundAsync(context);
        }

        if (!batch.RequestCancel())
        {
            return LocalModelServer.WriteErrorAsync(context, ModelReply.Error(409, $"Cannot cancel a batch with status '{batch.Status}'."));
        }

        Interlocked.Increment(ref _batchCancels);
        return WriteJsonAsync(context, 200, batch.WriteJson);
    }

    /// <summary>Leaves the request unanswered until the client goes away or the server stops.</summary>
    private async Task HoldAsync(HttpContext context)
    {
        using var hold = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token, _server.Stopping);
        try
        {
            await Task.Delay(Timeout.Infinite, hold.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Released.
        }

        context.Abort();
    }

    private bool TryGetFile(HttpContext context, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out LocalFile? file)
        => _files.TryGet(RouteId(context), out file);

    private bool TryGetBatch(HttpContext context, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out LocalBatch? batch)
    {
        lock (_gate)
        {
            return _batchesById.TryGetValue(RouteId(context), out batch);
        }
    }

    private static string RouteId(HttpContext context) => context.Request.RouteValues["id"] as string ?? string.Empty;

    private static Task FileNotFoundAsync(HttpContext context)
        => LocalModelServer.WriteErrorAsync(context, ModelReply.Error(404, $"No such File object: {RouteId(context)}"), "id");

    private static Task BatchNotFoundAsync(HttpContext context)
        => LocalModelServer.WriteErrorAsync(context, ModelReply.Error(404, $"No such Batch object: {RouteId(context)}"), "id");

    private static async Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> write)
    {
        var payload = ChatCompletionsProtocol.Write(write);
        context.Response.StatusCode = status;
        context.Response.ContentType = JsonContentType;
        context.Response.ContentLength = payload.Length;
        await context.Response.Body.WriteAsync(payload, context.RequestAborted).ConfigureAwait(false);
    }

    private sealed record BatchRequest(LocalFile File, IReadOnlyDictionary<string, string>? Metadata);
}
