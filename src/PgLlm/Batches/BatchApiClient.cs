using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using PgLlm.Completions;

namespace PgLlm.Batches;

/// <summary>A provider's batch as its Batch API reports it.</summary>
internal sealed record ProviderBatch(
    string Id, string Status, string? OutputFileId, string? ErrorFileId, DateTimeOffset? ExpiresAt, int Total, int Completed, int Failed, string? Errors, string? Token);

/// <summary>
/// The OpenAI Files and Batch APIs, as the batch tier uses them: upload a JSONL file (streamed from disk), create a
/// batch over it, find a file or batch PgLlm made before (by the batch's token in the file's name and the batch's
/// metadata), poll, cancel, and stream a result file. Written on HttpClient rather than the OpenAI SDK: the SDK's
/// batch client is experimental and protocol-level (raw JSON in and out), and its file download returns the whole
/// file in memory, where an output of 50,000 answers must be streamed. Failures are
/// <see cref="ModelEndpointException"/>s, as a call's are.
/// </summary>
internal sealed class BatchApiClient : IDisposable
{
    /// <summary>The metadata key of the batch's token.</summary>
    public const string TokenKey = "pgllm_batch";

    private const int ListPages = 20;

    private readonly HttpClient _http;
    private readonly string _base;

    public BatchApiClient(Uri baseUrl, string? apiKey, TimeSpan timeout)
    {
        _base = baseUrl.ToString().TrimEnd('/') + "/";
        _http = OpenAiCompatibleChatClient.CreateHttpClient(apiKey, timeout);
    }

    /// <summary>The name PgLlm gives a batch's input file.</summary>
    public static string FileNameOf(Guid token) => "pgllm-" + token.ToString("D") + ".jsonl";

    /// <summary>Uploads the file at <paramref name="path"/> (purpose <c>batch</c>), streamed; its file id.</summary>
    public async Task<string> UploadAsync(string path, string fileName, CancellationToken cancellationToken)
    {
        await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        using var content = new MultipartFormDataContent();
        content.Add(new StringContent("batch"), "purpose");
        var fileContent = new StreamContent(file, 1 << 16);
        fileContent.Headers.ContentType = new MediaTypeHeaderValue("application/jsonl");
        content.Add(fileContent, "file", fileName);
        using var document = await SendAsync(HttpMethod.Post, "files", content, cancellationToken).ConfigureAwait(false);
        return document.RootElement.GetProperty("id").GetString()!;
    }

    /// <summary>The id of a file of purpose <c>batch</c> named <paramref name="fileName"/>, when the provider has one.</summary>
    public async Task<string?> FindFileAsync(string fileName, CancellationToken cancellationToken)
    {
        using var document = await SendAsync(HttpMethod.Get, "files?purpose=batch", null, cancellationToken).ConfigureAwait(false);
        foreach (var file in document.RootElement.GetProperty("data").EnumerateArray())
        {
            if (file.TryGetProperty("filename", out var name) && name.GetString() == fileName)
            {
                return file.GetProperty("id").GetString();
            }
        }

        return null;
    }

    /// <summary>Creates the batch over an uploaded file, with the token in its metadata.</summary>
    public async Task<ProviderBatch> CreateAsync(string inputFileId, Guid token, string completionWindow, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["input_file_id"] = inputFileId,
            ["endpoint"] = "/v1/chat/completions",
            ["completion_window"] = completionWindow,
            ["metadata"] = new Dictionary<string, string> { [TokenKey] = token.ToString("D") },
        });
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var document = await SendAsync(HttpMethod.Post, "batches", content, cancellationToken).ConfigureAwait(false);
        return Read(document.RootElement);
    }

    /// <summary>The batch made with <paramref name="token"/>, looked for among the provider's recent batches.</summary>
    public async Task<ProviderBatch?> FindBatchAsync(Guid token, CancellationToken cancellationToken)
    {
        var wanted = token.ToString("D");
        string? after = null;
        for (var page = 0; page < ListPages; page++)
        {
            var path = "batches?limit=100" + (after is null ? string.Empty : "&after=" + Uri.EscapeDataString(after));
            using var document = await SendAsync(HttpMethod.Get, path, null, cancellationToken).ConfigureAwait(false);
            foreach (var element in document.RootElement.GetProperty("data").EnumerateArray())
            {
                var batch = Read(element);
                if (batch.Token == wanted)
                {
                    return batch;
                }

                after = batch.Id;
            }

            if (!document.RootElement.TryGetProperty("has_more", out var more) || more.ValueKind != JsonValueKind.True)
            {
                break;
            }
        }

        return null;
    }

    /// <summary>The batch's state now.</summary>
    public async Task<ProviderBatch> GetAsync(string batchId, CancellationToken cancellationToken)
    {
        using var document = await SendAsync(HttpMethod.Get, "batches/" + Uri.EscapeDataString(batchId), null, cancellationToken).ConfigureAwait(false);
        return Read(document.RootElement);
    }

    /// <summary>Asks the provider to cancel the batch.</summary>
    public async Task<ProviderBatch> CancelAsync(string batchId, CancellationToken cancellationToken)
    {
        using var document = await SendAsync(HttpMethod.Post, "batches/" + Uri.EscapeDataString(batchId) + "/cancel", null, cancellationToken).ConfigureAwait(false);
        return Read(document.RootElement);
    }

    /// <summary>A result file's content, streamed: the caller disposes the response.</summary>
    public async Task<HttpResponseMessage> OpenFileAsync(string fileId, CancellationToken cancellationToken)
    {
        var response = await _http.GetAsync(_base + "files/" + Uri.EscapeDataString(fileId) + "/content", HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            using (response)
            {
                var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
                throw OpenAiCompatibleChatClient.ErrorOf(response, body);
            }
        }

        return response;
    }

    public void Dispose() => _http.Dispose();

    private async Task<JsonDocument> SendAsync(HttpMethod method, string path, HttpContent? content, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, _base + path) { Content = content };
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, cancellationToken).ConfigureAwait(false);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw OpenAiCompatibleChatClient.ErrorOf(response, body);
        }

        try
        {
            return JsonDocument.Parse(body);
        }
        catch (JsonException ex)
        {
            throw new ModelEndpointException((int)response.StatusCode, $"the answer to {method} {path.Split('?')[0]} is not JSON: {ex.Message}");
        }
    }

    private static ProviderBatch Read(JsonElement batch)
    {
        var counts = batch.TryGetProperty("request_counts", out var c) && c.ValueKind == JsonValueKind.Object ? c : default;
        string? token = null;
        if (batch.TryGetProperty("metadata", out var metadata) && metadata.ValueKind == JsonValueKind.Object
            && metadata.TryGetProperty(TokenKey, out var t) && t.ValueKind == JsonValueKind.String)
        {
            token = t.GetString();
        }

        return new ProviderBatch(
            batch.GetProperty("id").GetString()!,
            batch.GetProperty("status").GetString()!,
            StringOf(batch, "output_file_id"),
            StringOf(batch, "error_file_id"),
            batch.TryGetProperty("expires_at", out var expires) && expires.ValueKind == JsonValueKind.Number ? DateTimeOffset.FromUnixTimeSeconds(expires.GetInt64()) : null,
            CountOf(counts, "total"),
            CountOf(counts, "completed"),
            CountOf(counts, "failed"),
            batch.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object ? ErrorsOf(errors) : null,
            token);
    }

    private static string? StringOf(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static int CountOf(JsonElement counts, string name) =>
        counts.ValueKind == JsonValueKind.Object && counts.TryGetProperty(name, out var value) && value.TryGetInt32(out var n) ? n : 0;

    private static string ErrorsOf(JsonElement errors)
    {
        var text = new StringBuilder();
        if (errors.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Array)
        {
            foreach (var error in data.EnumerateArray().Take(3))
            {
                text.Append(text.Length == 0 ? string.Empty : "; ").Append(StringOf(error, "message") ?? StringOf(error, "code"));
            }
        }

        return text.Length == 0 ? "the batch failed" : text.ToString();
    }
}
