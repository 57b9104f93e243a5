using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using OpenAI;
using OpenAI.Batch;
using OpenAI.Files;

namespace PgLlm.Local.Tests;

public sealed class LocalBatchApiTests
{
    private static readonly TimeSpan WaitLimit = TimeSpan.FromSeconds(60);
    private static readonly string[] RunningOrDone = ["validating", "in_progress", "finalizing", "completed"];

    private readonly ITestOutputHelper _output;

    public LocalBatchApiTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public async Task AThousandLinesAreEachAnsweredOnceLikeTheChatEndpoint()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        var fileId = await UploadAsync(http, Jsonl(1000));
        var created = await CreateBatchAsync(http, fileId, """{"job":"nightly","owner":"tests"}""");
        Assert.StartsWith("batch_", created.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("batch", created.GetProperty("object").GetString());
        Assert.Equal("/v1/chat/completions", created.GetProperty("endpoint").GetString());
        Assert.Equal(fileId, created.GetProperty("input_file_id").GetString());
        Assert.Equal("24h", created.GetProperty("completion_window").GetString());
        Assert.Contains(created.GetProperty("status").GetString(), RunningOrDone);

        var batch = await WaitForStatusAsync(http, created.GetProperty("id").GetString()!, "completed");
        Assert.Equal(JsonValueKind.Null, batch.GetProperty("errors").ValueKind);
        Assert.Equal(1000, batch.GetProperty("request_counts").GetProperty("total").GetInt32());
        Assert.Equal(1000, batch.GetProperty("request_counts").GetProperty("completed").GetInt32());
        Assert.Equal(0, batch.GetProperty("request_counts").GetProperty("failed").GetInt32());
        Assert.Equal(JsonValueKind.Null, batch.GetProperty("error_file_id").ValueKind);
        foreach (var stamp in new[] { "created_at", "in_progress_at", "finalizing_at", "completed_at", "expires_at" })
        {
            Assert.Equal(JsonValueKind.Number, batch.GetProperty(stamp).ValueKind);
        }

        Assert.Equal("nightly", batch.GetProperty("metadata").GetProperty("job").GetString());
        Assert.Equal("tests", batch.GetProperty("metadata").GetProperty("owner").GetString());

        var lines = await DownloadLinesAsync(http, batch.GetProperty("output_file_id").GetString()!);
        Assert.Equal(1000, lines.Count);
        Assert.Equal(1000, lines.Select(l => l.GetProperty("custom_id").GetString()).Distinct().Count());
        Assert.Equal(1000, lines.Select(l => l.GetProperty("id").GetString()).Distinct().Count());
        foreach (var line in lines)
        {
            Assert.StartsWith("batch_req_", line.GetProperty("id").GetString(), StringComparison.Ordinal);
            Assert.Equal(JsonValueKind.Null, line.GetProperty("error").ValueKind);
            var response = line.GetProperty("response");
            Assert.Equal(200, response.GetProperty("status_code").GetInt32());
            Assert.False(string.IsNullOrEmpty(response.GetProperty("request_id").GetString()));
            var index = int.Parse(line.GetProperty("custom_id").GetString()!["req-".Length..], System.Globalization.CultureInfo.InvariantCulture);
            var expected = DeterministicModel.Answer(ModelRequest.Parse(Body(index)));
            Assert.Equal(expected, Content(response.GetProperty("body")));
        }

        // The chat endpoint gives the same answer and usage for the same body.
        foreach (var index in new[] { 0, 17, 999 })
        {
            using var chat = await http.PostAsync("chat/completions", new StringContent(Body(index), Encoding.UTF8, "application/json"));
            using var chatBody = JsonDocument.Parse(await chat.Content.ReadAsStringAsync());
            var batchBody = lines.Single(l => l.GetProperty("custom_id").GetString() == $"req-{index}").GetProperty("response").GetProperty("body");
            Assert.Equal(Content(chatBody.RootElement), Content(batchBody));
            Assert.Equal(chatBody.RootElement.GetProperty("usage").GetRawText(), batchBody.GetProperty("usage").GetRawText());
            Assert.Equal("chat.completion", batchBody.GetProperty("object").GetString());
        }

        Assert.Equal(1000, server.Requests.Count(r => r.ViaBatch));
        Assert.Equal(3, server.Requests.Count(r => !r.ViaBatch));
        Assert.Equal(1003, server.RequestCount);
        var info = Assert.Single(server.Batches);
        Assert.Equal(("completed", 1000, 1000, 0), (info.Status, info.Total, info.Completed, info.Failed));
        Assert.Equal("nightly", info.Metadata!["job"]);
        Assert.Equal((1, 1, 0), (server.FileUploads, server.BatchesCreated, server.BatchCancels));
    }

    [Fact]
    public async Task TheOpenAiClientsUploadRunAndDownloadABatch()
    {
        await using var server = await LocalModelServer.StartAsync();
        var options = new OpenAIClientOptions { Endpoint = server.BaseUrl };
        var files = new OpenAIFileClient(new ApiKeyCredential(server.ApiKey), options);
        var bytes = Encoding.UTF8.GetBytes(Jsonl(20));
        using var input = new MemoryStream(bytes);
        OpenAIFile uploaded = await files.UploadFileAsync(input, "requests.jsonl", FileUploadPurpose.Batch);
        Assert.Equal("requests.jsonl", uploaded.Filename);
        Assert.Equal(bytes.Length, uploaded.SizeInBytes);
        Assert.Contains((await files.GetFilesAsync(FilePurpose.Batch)).Value, f => f.Id == uploaded.Id);

#pragma warning disable OPENAI001 // The batch client is marked experimental.
        var batches = new BatchClient(new ApiKeyCredential(server.ApiKey), options);
        var request = BinaryContent.Create(BinaryData.FromString(
            $$"""{"input_file_id":"{{uploaded.Id}}","endpoint":"/v1/chat/completions","completion_window":"24h"}"""));
        using var timeout = new CancellationTokenSource(WaitLimit);
        var operation = await batches.CreateBatchAsync(request, waitUntilCompleted: true, new System.ClientModel.Primitives.RequestOptions { CancellationToken = timeout.Token });
        Assert.True(operation.HasCompleted);
        using var batch = JsonDocument.Parse(operation.GetRawResponse().Content.ToString());
#pragma warning restore OPENAI001
        Assert.Equal("completed", batch.RootElement.GetProperty("status").GetString());
        var output = await files.DownloadFileAsync(batch.RootElement.GetProperty("output_file_id").GetString()!);
        var lines = output.Value.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(20, lines.Length);

        await files.DeleteFileAsync(uploaded.Id);
        Assert.DoesNotContain((await files.GetFilesAsync(FilePurpose.Batch)).Value, f => f.Id == uploaded.Id);
    }

    [Fact]
    public async Task FailedAndMissingFractionsGiveTheCountsTheFateFunctionPredicts()
    {
        await using var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { BatchFailedLineFraction = 0.1 });
        server.BatchMissingLineFraction = 0.05;
        using var http = CreateClient(server);
        var fates = Enumerable.Range(0, 1000).ToDictionary(i => $"req-{i}", i => LocalModelServer.GetBatchLineFate($"req-{i}", 0.1, 0.05));
        var failed = fates.Count(f => f.Value == BatchLineFate.Failed);
        var missing = fates.Count(f => f.Value == BatchLineFate.Missing);
        Assert.InRange(failed, 60, 140);
        Assert.InRange(missing, 20, 80);

        var created = await CreateBatchAsync(http, await UploadAsync(http, Jsonl(1000)));
        var batch = await WaitForStatusAsync(http, created.GetProperty("id").GetString()!, "completed");
        var counts = batch.GetProperty("request_counts");
        Assert.Equal((1000, 1000 - failed - missing, failed), (counts.GetProperty("total").GetInt32(), counts.GetProperty("completed").GetInt32(), counts.GetProperty("failed").GetInt32()));

        var output = await DownloadLinesAsync(http, batch.GetProperty("output_file_id").GetString()!);
        var errors = await DownloadLinesAsync(http, batch.GetProperty("error_file_id").GetString()!);
        Assert.All(output, l => Assert.Equal(BatchLineFate.Answered, fates[l.GetProperty("custom_id").GetString()!]));
        Assert.Equal(failed, errors.Count);
        foreach (var line in errors)
        {
            Assert.Equal(BatchLineFate.Failed, fates[line.GetProperty("custom_id").GetString()!]);
            Assert.Equal(500, line.GetProperty("response").GetProperty("status_code").GetInt32());
            Assert.Equal("server_error", line.GetProperty("response").GetProperty("body").GetProperty("error").GetProperty("type").GetString());
            Assert.Equal(JsonValueKind.Null, line.GetProperty("error").ValueKind);
        }

        Assert.Equal(1000 - failed - missing, server.Requests.Count(r => r.ViaBatch));
        using var listed = JsonDocument.Parse(await http.GetStringAsync("files?purpose=batch_output"));
        Assert.Equal(2, listed.RootElement.GetProperty("data").GetArrayLength());
    }

    [Fact]
    public async Task ResponderErrorsGoToTheErrorFileWithTheirStatus()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = request => request.UserText.Contains("7 is", StringComparison.Ordinal)
            ? ModelReply.Error(429, "Slow down.")
            : ModelReply.Json("""{"ok":true}""");
        using var http = CreateClient(server);
        var created = await CreateBatchAsync(http, await UploadAsync(http, Jsonl(100)));
        var batch = await WaitForStatusAsync(http, created.GetProperty("id").GetString()!, "completed");
        var errors = await DownloadLinesAsync(http, batch.GetProperty("error_file_id").GetString()!);
        var output = await DownloadLinesAsync(http, batch.GetProperty("output_file_id").GetString()!);
        Assert.Equal(10, errors.Count);
        Assert.Equal(90, output.Count);
        Assert.All(errors, l => Assert.Equal(429, l.GetProperty("response").GetProperty("status_code").GetInt32()));
        Assert.All(errors, l => Assert.Equal("Slow down.", l.GetProperty("response").GetProperty("body").GetProperty("error").GetProperty("message").GetString()));
        Assert.All(output, l => Assert.Equal("""{"ok":true}""", Content(l.GetProperty("response").GetProperty("body"))));
        Assert.Equal((100, 90, 10), (batch.GetProperty("request_counts").GetProperty("total").GetInt32(), batch.GetProperty("request_counts").GetProperty("completed").GetInt32(), batch.GetProperty("request_counts").GetProperty("failed").GetInt32()));
    }

    [Fact]
    public async Task AMalformedLineFailsValidation()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        var content = Line(0) + "\n{not json\n" + Line(2) + "\n" + Line(3).Replace("POST", "GET", StringComparison.Ordinal) + "\n";
        var created = await CreateBatchAsync(http, await UploadAsync(http, content));
        var batch = await WaitForStatusAsync(http, created.GetProperty("id").GetString()!, "failed");
        var errors = batch.GetProperty("errors");
        Assert.Equal("list", errors.GetProperty("object").GetString());
        var data = errors.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(2, data.Count);
        Assert.Equal(("invalid_json_line", 2), (data[0].GetProperty("code").GetString(), data[0].GetProperty("line").GetInt32()));
        Assert.Equal(4, data[1].GetProperty("line").GetInt32());
        Assert.Equal(JsonValueKind.Number, batch.GetProperty("failed_at").ValueKind);
        Assert.Equal(JsonValueKind.Null, batch.GetProperty("output_file_id").ValueKind);
        Assert.Equal(JsonValueKind.Null, batch.GetProperty("in_progress_at").ValueKind);
        Assert.Empty(server.Requests);
        Assert.Equal(2, Assert.Single(server.Batches).Errors.Count);
    }

    [Fact]
    public async Task ExpiredBatchesKeepOnlyTheLinesDoneBefore()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        var fileId = await UploadAsync(http, Jsonl(1000));

        server.BatchExpireAfterLines = 300;
        var partial = await CreateBatchAsync(http, fileId);
        server.BatchExpireAfterLines = null;
        server.BatchExpiresAfter = TimeSpan.Zero;
        var none = await CreateBatchAsync(http, fileId);
        server.BatchExpiresAfter = null;
        var whole = await CreateBatchAsync(http, fileId);

        var expired = await WaitForStatusAsync(http, partial.GetProperty("id").GetString()!, "expired");
        Assert.Equal(JsonValueKind.Number, expired.GetProperty("expired_at").ValueKind);
        Assert.Equal(300, expired.GetProperty("request_counts").GetProperty("completed").GetInt32());
        Assert.Equal(1000, expired.GetProperty("request_counts").GetProperty("total").GetInt32());
        var lines = await DownloadLinesAsync(http, expired.GetProperty("output_file_id").GetString()!);
        Assert.Equal(Enumerable.Range(0, 300).Select(i => $"req-{i}"), lines.Select(l => l.GetProperty("custom_id").GetString()));

        var empty = await WaitForStatusAsync(http, none.GetProperty("id").GetString()!, "expired");
        Assert.Equal(JsonValueKind.Null, empty.GetProperty("output_file_id").ValueKind);
        Assert.Equal(JsonValueKind.Null, empty.GetProperty("error_file_id").ValueKind);
        Assert.True(empty.GetProperty("expires_at").GetInt64() <= empty.GetProperty("created_at").GetInt64() + 1);

        var completed = await WaitForStatusAsync(http, whole.GetProperty("id").GetString()!, "completed");
        Assert.True(completed.GetProperty("expires_at").GetInt64() >= completed.GetProperty("created_at").GetInt64() + (24 * 3600) - 1);
    }

    [Fact]
    public async Task CancelLeavesUnansweredLinesOutOfBothFiles()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var reached = new SemaphoreSlim(0);
        using var release = new ManualResetEventSlim();
        var calls = 0;
        server.Responder = request =>
        {
            if (Interlocked.Increment(ref calls) == 100)
            {
                reached.Release();
                release.Wait(WaitLimit);
            }

            return ModelReply.Json("done");
        };
        using var http = CreateClient(server);
        var created = await CreateBatchAsync(http, await UploadAsync(http, Jsonl(1000)));
        var id = created.GetProperty("id").GetString()!;
        Assert.True(await reached.WaitAsync(WaitLimit));

        using var cancel = await http.PostAsync($"batches/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        using var cancelling = JsonDocument.Parse(await cancel.Content.ReadAsStringAsync());
        Assert.Equal("cancelling", cancelling.RootElement.GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.Number, cancelling.RootElement.GetProperty("cancelling_at").ValueKind);
        release.Set();

        var batch = await WaitForStatusAsync(http, id, "cancelled");
        Assert.Equal(JsonValueKind.Number, batch.GetProperty("cancelled_at").ValueKind);
        Assert.Equal(100, batch.GetProperty("request_counts").GetProperty("completed").GetInt32());
        Assert.Equal(100, (await DownloadLinesAsync(http, batch.GetProperty("output_file_id").GetString()!)).Count);
        Assert.Equal(100, Volatile.Read(ref calls));
        Assert.Equal(1, server.BatchCancels);

        using var again = await http.PostAsync($"batches/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        using var unknown = await http.PostAsync("batches/batch_nope/cancel", null);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }

    [Fact]
    public async Task CompletionDelayKeepsTheBatchInProgressAfterItsLinesAreDone()
    {
        await using var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { BatchCompletionDelay = TimeSpan.FromHours(1) });
        using var http = CreateClient(server);
        var created = await CreateBatchAsync(http, await UploadAsync(http, Jsonl(50)));
        var id = created.GetProperty("id").GetString()!;
        await WaitUntilAsync(() => server.Batches.Single().Completed == 50);
        var info = server.Batches.Single();
        Assert.Equal("in_progress", info.Status);
        Assert.Null(info.OutputFileId);

        using var cancel = await http.PostAsync($"batches/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        var batch = await WaitForStatusAsync(http, id, "cancelled");
        Assert.Equal(50, (await DownloadLinesAsync(http, batch.GetProperty("output_file_id").GetString()!)).Count);
    }

    [Fact]
    public async Task BatchesAndFilesAreListedFetchedAndDeleted()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        var fileId = await UploadAsync(http, Jsonl(3));
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add((await CreateBatchAsync(http, fileId)).GetProperty("id").GetString()!);
        }

        using var first = JsonDocument.Parse(await http.GetStringAsync("batches?limit=2"));
        Assert.Equal("list", first.RootElement.GetProperty("object").GetString());
        Assert.Equal([ids[2], ids[1]], first.RootElement.GetProperty("data").EnumerateArray().Select(b => b.GetProperty("id").GetString()));
        Assert.True(first.RootElement.GetProperty("has_more").GetBoolean());
        Assert.Equal(ids[2], first.RootElement.GetProperty("first_id").GetString());
        Assert.Equal(ids[1], first.RootElement.GetProperty("last_id").GetString());
        using var second = JsonDocument.Parse(await http.GetStringAsync($"batches?limit=2&after={ids[1]}"));
        Assert.Equal([ids[0]], second.RootElement.GetProperty("data").EnumerateArray().Select(b => b.GetProperty("id").GetString()));
        Assert.False(second.RootElement.GetProperty("has_more").GetBoolean());

        using var file = JsonDocument.Parse(await http.GetStringAsync($"files/{fileId}"));
        Assert.Equal(("file", "batch", "batch.jsonl"), (file.RootElement.GetProperty("object").GetString(), file.RootElement.GetProperty("purpose").GetString(), file.RootElement.GetProperty("filename").GetString()));
        Assert.Equal(Encoding.UTF8.GetByteCount(Jsonl(3)), file.RootElement.GetProperty("bytes").GetInt64());
        Assert.Equal(Jsonl(3), await http.GetStringAsync($"files/{fileId}/content"));
        using var all = JsonDocument.Parse(await http.GetStringAsync("files"));
        Assert.Contains(all.RootElement.GetProperty("data").EnumerateArray(), f => f.GetProperty("id").GetString() == fileId);
        Assert.False(all.RootElement.GetProperty("has_more").GetBoolean());

        using var deleted = await http.DeleteAsync($"files/{fileId}");
        using var deletedBody = JsonDocument.Parse(await deleted.Content.ReadAsStringAsync());
        Assert.True(deletedBody.RootElement.GetProperty("deleted").GetBoolean());
        using var gone = await http.GetAsync($"files/{fileId}");
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        using var goneContent = await http.GetAsync($"files/{fileId}/content");
        Assert.Equal(HttpStatusCode.NotFound, goneContent.StatusCode);
        using var unknownBatch = await http.GetAsync("batches/batch_nope");
        Assert.Equal(HttpStatusCode.NotFound, unknownBatch.StatusCode);
    }

    [Fact]
    public async Task HoldAfterUploadStoresTheFileAndLeavesTheRequestHanging()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.HoldAfterUpload = true;
        using var http = CreateClient(server);
        using var abandon = new CancellationTokenSource();
        var upload = http.PostAsync("files", Multipart(Jsonl(5), "batch"), abandon.Token);
        await WaitUntilAsync(() => server.FileUploads == 1);
        using var listed = JsonDocument.Parse(await http.GetStringAsync("files"));
        var fileId = Assert.Single(listed.RootElement.GetProperty("data").EnumerateArray()).GetProperty("id").GetString()!;
        Assert.False(upload.IsCompleted);
        await abandon.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => upload);

        server.HoldAfterUpload = false;
        server.HoldAfterBatchCreate = true;
        using var abandonCreate = new CancellationTokenSource();
        var create = http.PostAsync("batches", BatchRequest(fileId, null), abandonCreate.Token);
        await WaitUntilAsync(() => server.Batches.Count == 1 && server.Batches[0].Status == "completed");
        Assert.Equal(1, server.BatchesCreated);
        Assert.False(create.IsCompleted);
        await abandonCreate.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => create);

        // Disposing the server releases a held request too.
        server.HoldAfterUpload = true;
        var held = http.PostAsync("files", Multipart(Jsonl(1), "batch"));
        await WaitUntilAsync(() => server.FileUploads == 2);
        await server.DisposeAsync();
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => held);
    }

    [Fact]
    public async Task BadRequestsGetOpenAiErrors()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var anonymous = new HttpClient { BaseAddress = server.BaseUrl };
        foreach (var path in new[] { "files", "batches" })
        {
            using var refused = await anonymous.GetAsync(path);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.Equal("authentication_error", await ErrorFieldAsync(refused, "type"));
        }

        using var refusedUpload = await anonymous.PostAsync("files", Multipart(Jsonl(1), "batch"));
        Assert.Equal(HttpStatusCode.Unauthorized, refusedUpload.StatusCode);
        Assert.Equal(0, server.FileUploads);

        using var http = CreateClient(server);
        using var wrongPurpose = await http.PostAsync("files", Multipart(Jsonl(1), "fine-tune"));
        Assert.Equal(HttpStatusCode.BadRequest, wrongPurpose.StatusCode);
        Assert.Equal("purpose", await ErrorFieldAsync(wrongPurpose, "param"));
        using var noFile = await http.PostAsync("files", new MultipartFormDataContent { { new StringContent("batch"), "purpose" } });
        Assert.Equal(HttpStatusCode.BadRequest, noFile.StatusCode);
        using var notMultipart = await http.PostAsync("files", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, notMultipart.StatusCode);
        Assert.Equal(0, server.FileUploads);
        using var files = JsonDocument.Parse(await http.GetStringAsync("files"));
        Assert.Equal(0, files.RootElement.GetProperty("data").GetArrayLength());

        using var unknownFile = await http.PostAsync("batches", BatchRequest("file-nope", null));
        Assert.Equal(HttpStatusCode.NotFound, unknownFile.StatusCode);
        Assert.Equal("invalid_request_error", await ErrorFieldAsync(unknownFile, "type"));
        var fileId = await UploadAsync(http, Jsonl(1));
        using var wrongEndpoint = await http.PostAsync("batches", new StringContent(
            $$"""{"input_file_id":"{{fileId}}","endpoint":"/v1/embeddings","completion_window":"24h"}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, wrongEndpoint.StatusCode);
        Assert.Equal("endpoint", await ErrorFieldAsync(wrongEndpoint, "param"));
        using var badMetadata = await http.PostAsync("batches", BatchRequest(fileId, """{"n":1}"""));
        Assert.Equal(HttpStatusCode.BadRequest, badMetadata.StatusCode);
        Assert.Equal(0, server.BatchesCreated);
        Assert.Empty(server.Batches);
    }

    [Fact]
    public async Task FiftyThousandLinesRunWithoutHoldingThemInMemory()
    {
        var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { RecordRequests = false });
        await using var disposeServer = server;
        using var http = CreateClient(server);
        const int count = 50_000;
        var path = Path.Combine(Path.GetTempPath(), $"pgllm-batch-test-{Guid.NewGuid():N}.jsonl");
        try
        {
            await using (var writer = new StreamWriter(path, append: false, new UTF8Encoding(false)))
            {
                for (var i = 0; i < count; i++)
                {
                    await writer.WriteAsync(Line(i) + "\n");
                }
            }

            string fileId;
            await using (var stream = File.OpenRead(path))
            {
                using var upload = await http.PostAsync("files", Multipart(new StreamContent(stream), "batch"));
                upload.EnsureSuccessStatusCode();
                using var uploaded = JsonDocument.Parse(await upload.Content.ReadAsStringAsync());
                fileId = uploaded.RootElement.GetProperty("id").GetString()!;
                Assert.Equal(new FileInfo(path).Length, uploaded.RootElement.GetProperty("bytes").GetInt64());
            }

            var retainedBefore = GC.GetTotalMemory(forceFullCollection: true);
            var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            var clock = Stopwatch.StartNew();
            var created = await CreateBatchAsync(http, fileId);
            var batch = await WaitForStatusAsync(http, created.GetProperty("id").GetString()!, "completed", TimeSpan.FromMinutes(5));
            var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
            var retained = GC.GetTotalMemory(forceFullCollection: true) - retainedBefore;
            _output.WriteLine($"{count} lines in {clock.Elapsed.TotalSeconds:F2} s; allocated {allocated / count} bytes per line; retained {retained / 1024} KiB");
            Assert.Equal(count, batch.GetProperty("request_counts").GetProperty("completed").GetInt32());
            Assert.InRange(retained, long.MinValue, 32L * 1024 * 1024);
            Assert.InRange(allocated / count, 0, 64 * 1024);

            using var response = await http.GetAsync($"files/{batch.GetProperty("output_file_id").GetString()}/content", HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var lines = 0;
            while (await reader.ReadLineAsync() is { } line)
            {
                lines += line.Length > 0 ? 1 : 0;
            }

            Assert.Equal(count, lines);
            Assert.Equal(count, server.RequestCount);

            // The files live in a directory of the server's own, removed on dispose.
            var directory = server.FilesDirectory;
            Assert.NotEmpty(Directory.EnumerateFiles(directory));
            await server.DisposeAsync();
            Assert.False(Directory.Exists(directory));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string Body(int index)
        => $$"""{"model":"local-model","messages":[{"role":"system","content":"Classify."},{"role":"user","content":"review number {{index}} is great"}]}""";

    private static string Line(int index)
        => $$"""{"custom_id":"req-{{index}}","method":"POST","url":"/v1/chat/completions","body":{{Body(index)}}}""";

    private static string Jsonl(int count)
        => string.Concat(Enumerable.Range(0, count).Select(i => Line(i) + "\n"));

    private static string? Content(JsonElement completion)
        => completion.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();

    private static HttpClient CreateClient(LocalModelServer server)
    {
        var http = new HttpClient { BaseAddress = server.BaseUrl, Timeout = TimeSpan.FromMinutes(5) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.ApiKey);
        return http;
    }

    private static MultipartFormDataContent Multipart(string jsonl, string purpose)
        => Multipart(new StringContent(jsonl, Encoding.UTF8, "application/jsonl"), purpose);

    private static MultipartFormDataContent Multipart(HttpContent file, string purpose)
        => new() { { new StringContent(purpose), "purpose" }, { file, "file", "batch.jsonl" } };

    private static StringContent BatchRequest(string fileId, string? metadata)
        => new(
            $$"""{"input_file_id":"{{fileId}}","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{{metadata ?? "null"}}}""",
            Encoding.UTF8,
            "application/json");

    private static async Task<string> UploadAsync(HttpClient http, string jsonl)
    {
        using var response = await http.PostAsync("files", Multipart(jsonl, "batch"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var file = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("file", file.RootElement.GetProperty("object").GetString());
        return file.RootElement.GetProperty("id").GetString()!;
    }

    private static async Task<JsonElement> CreateBatchAsync(HttpClient http, string fileId, string? metadata = null)
    {
        using var response = await http.PostAsync("batches", BatchRequest(fileId, metadata));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var batch = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return batch.RootElement.Clone();
    }

    private static async Task<JsonElement> WaitForStatusAsync(HttpClient http, string id, string status, TimeSpan? limit = null)
    {
        JsonElement batch = default;
        await WaitUntilAsync(
            async () =>
            {
                using var document = JsonDocument.Parse(await http.GetStringAsync($"batches/{id}"));
                batch = document.RootElement.Clone();
                return batch.GetProperty("status").GetString() == status;
            },
            limit ?? WaitLimit);
        return batch;
    }

    private static async Task<List<JsonElement>> DownloadLinesAsync(HttpClient http, string fileId)
    {
        var text = await http.GetStringAsync($"files/{fileId}/content");
        return text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l =>
        {
            using var document = JsonDocument.Parse(l);
            return document.RootElement.Clone();
        }).ToList();
    }

    private static async Task<string?> ErrorFieldAsync(HttpResponseMessage response, string field)
    {
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return body.RootElement.GetProperty("error").GetProperty(field).GetString();
    }

    private static Task WaitUntilAsync(Func<bool> condition) => WaitUntilAsync(() => Task.FromResult(condition()), WaitLimit);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan limit)
    {
        var clock = Stopwatch.StartNew();
        for (var attempt = 0; attempt < 100_000; attempt++)
        {
            if (await condition())
            {
                return;
            }

            Assert.True(clock.Elapsed < limit, $"Condition not met within {limit}.");
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(100, 5 * (attempt + 1))));
        }

        Assert.Fail("Condition not met within the attempt limit.");
    }
}
