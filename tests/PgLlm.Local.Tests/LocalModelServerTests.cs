using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using ChatResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat;

namespace PgLlm.Local.Tests;

public sealed class LocalModelServerTests
{
    private const string SentimentSchema = """
        {
          "type": "object",
          "properties": {
            "sentiment": { "type": "string", "enum": ["positive", "negative", "neutral"] },
            "summary": { "type": "string" },
            "stars": { "type": "integer" },
            "is_spam": { "type": ["boolean", "null"] }
          },
          "required": ["sentiment", "summary", "stars", "is_spam"],
          "additionalProperties": false
        }
        """;

    private readonly ITestOutputHelper _output;

    public LocalModelServerTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public async Task PostReturnsTheDocumentedShape()
    {
        await using var server = await LocalModelServer.StartAsync();
        Assert.Equal($"http://127.0.0.1:{server.Port}/v1/", server.BaseUrl.ToString());
        using var http = CreateClient(server);

        using var response = await http.PostAsync("chat/completions", JsonBody("""
            {"model":"test-model","temperature":0.5,"max_tokens":50,
             "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello there"}]}
            """));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);

        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = document.RootElement;
        Assert.StartsWith("chatcmpl-", root.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("chat.completion", root.GetProperty("object").GetString());
        Assert.InRange(root.GetProperty("created").GetInt64(), DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.AddMinutes(1).ToUnixTimeSeconds());
        Assert.Equal("test-model", root.GetProperty("model").GetString());
        var choice = Assert.Single(root.GetProperty("choices").EnumerateArray());
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal("echo: hello there", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("message").GetProperty("refusal").ValueKind);
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        var usage = root.GetProperty("usage");
        Assert.Equal(DeterministicModel.CountTokens("Be brief.hello there"), usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(DeterministicModel.CountTokens("echo: hello there"), usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(
            usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32(),
            usage.GetProperty("total_tokens").GetInt32());

        var recorded = Assert.Single(server.Requests);
        Assert.Equal(1, server.RequestCount);
        Assert.Equal("test-model", recorded.Model);
        Assert.Equal("hello there", recorded.UserText);
        Assert.Equal("Be brief.", recorded.SystemText);
        Assert.Equal(0.5, recorded.Temperature);
        Assert.Equal(50, recorded.MaxTokens);
        Assert.Null(recorded.ResponseFormatType);

        // The un-prefixed path and the models endpoint work too.
        using var bare = await http.PostAsync(new Uri(server.BaseUrl, "/chat/completions"), JsonBody("""{"model":"m","messages":[{"role":"user","content":"x"}]}"""));
        Assert.Equal(HttpStatusCode.OK, bare.StatusCode);
        using var models = JsonDocument.Parse(await http.GetStringAsync("models"));
        Assert.Equal("local-model", models.RootElement.GetProperty("data")[0].GetProperty("id").GetString());

        server.ClearRequests();
        Assert.Empty(server.Requests);
        Assert.Equal(0, server.RequestCount);
    }

    [Fact]
    public async Task MultipartContentIsParsed()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        using var response = await http.PostAsync("chat/completions", JsonBody("""
            {"model":"m","messages":[{"role":"user","content":[
              {"type":"text","text":"Describe:"},
              {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
              {"type":"text","text":"please"}]}]}
            """));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var message = Assert.Single(Assert.Single(server.Requests).Messages);
        Assert.Equal("user", message.Role);
        Assert.Equal("Describe:\nplease", message.Text);
        Assert.Equal(["data:image/png;base64,AAAA"], message.ImageUrls);
    }

    [Fact]
    public async Task RequestsWithoutTheKeyGet401()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = new HttpClient { BaseAddress = server.BaseUrl };

        using var missing = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[]}"""));
        Assert.Equal(HttpStatusCode.Unauthorized, missing.StatusCode);
        using var error = JsonDocument.Parse(await missing.Content.ReadAsStringAsync());
        Assert.False(string.IsNullOrEmpty(error.RootElement.GetProperty("error").GetProperty("message").GetString()));
        Assert.Equal("authentication_error", error.RootElement.GetProperty("error").GetProperty("type").GetString());

        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong-key");
        using var wrong = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[]}"""));
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal(0, server.RequestCount);
    }

    [Fact]
    public async Task ResponderErrorSetsStatusBodyAndRetryAfter()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = _ => ModelReply.Error(429, "slow down", TimeSpan.FromSeconds(1.5));
        using var http = CreateClient(server);

        using var response = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[{"role":"user","content":"hi"}]}"""));
        Assert.Equal((HttpStatusCode)429, response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(2), response.Headers.RetryAfter?.Delta);
        Assert.Equal("1500", Assert.Single(response.Headers.GetValues("retry-after-ms")));
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var error = body.RootElement.GetProperty("error");
        Assert.Equal("slow down", error.GetProperty("message").GetString());
        Assert.Equal("rate_limit_error", error.GetProperty("type").GetString());
        Assert.Equal(1, server.RequestCount);

        server.Responder = _ => ModelReply.Raw(200, "not json at all");
        using var raw = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[]}"""));
        Assert.Equal("not json at all", await raw.Content.ReadAsStringAsync());

        server.Responder = _ => throw new InvalidOperationException("boom");
        using var failed = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[]}"""));
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        Assert.Contains("boom", await failed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task LatencyIsHonoured()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var http = CreateClient(server);
        server.Latency = TimeSpan.FromMilliseconds(200);

        var stopwatch = Stopwatch.StartNew();
        using var response = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[{"role":"user","content":"hi"}]}"""));
        var elapsed = stopwatch.Elapsed;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(elapsed >= server.Latency, $"elapsed {elapsed.TotalMilliseconds} ms");

        // A per-reply delay adds to the server latency.
        server.Responder = _ => ModelReply.Json("{}").WithDelay(TimeSpan.FromMilliseconds(100));
        stopwatch.Restart();
        using var delayed = await http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[{"role":"user","content":"hi"}]}"""));
        elapsed = stopwatch.Elapsed;
        Assert.True(elapsed >= TimeSpan.FromMilliseconds(300), $"elapsed {elapsed.TotalMilliseconds} ms");
    }

    [Fact]
    public async Task DisposeDoesNotWaitForDelayedAnswers()
    {
        var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromMinutes(5) });
        using var http = CreateClient(server);
        var pending = http.PostAsync("chat/completions", JsonBody("""{"model":"m","messages":[]}"""));
        while (server.RequestCount == 0)
        {
            await Task.Delay(10);
        }

        var stopwatch = Stopwatch.StartNew();
        await server.DisposeAsync();
        await server.DisposeAsync();
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(10), $"dispose took {stopwatch.Elapsed}");
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => pending);
    }

    [Fact]
    public async Task RecordingIsBounded()
    {
        await using var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { MaxRecordedRequests = 3 });
        using var http = CreateClient(server);
        for (var i = 0; i < 5; i++)
        {
            using var response = await http.PostAsync("chat/completions", JsonBody($$"""{"model":"m","messages":[{"role":"user","content":"n{{i}}"}]}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal(5, server.RequestCount);
        Assert.Equal(["n2", "n3", "n4"], server.Requests.Select(r => r.UserText));
    }

    [Fact]
    public async Task InlineSchedulingServesConcurrentDelayedRequests()
    {
        await using var server = await LocalModelServer.StartAsync(new LocalModelServerOptions
        {
            InlineScheduling = true,
            Latency = TimeSpan.FromMilliseconds(50),
        });
        using var http = CreateClient(server);
        var answers = await Task.WhenAll(Enumerable.Range(0, 16).Select(async i =>
        {
            using var response = await http.PostAsync("chat/completions", JsonBody($$"""{"model":"m","messages":[{"role":"user","content":"n{{i}}"}]}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            return document.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        }));

        Assert.Equal(16, server.RequestCount);
        Assert.Equal(16, server.Requests.Select(r => r.UserText).Distinct().Count());
        Assert.All(answers, answer => Assert.False(string.IsNullOrEmpty(answer)));
    }

    [Fact]
    public void DeterministicSentimentSchemaSaysPositiveForILoveThis()
    {
        var request = SchemaRequest(SentimentSchema, "I love this");
        var answer = DeterministicModel.Answer(request);
        _output.WriteLine(answer);

        using var document = JsonDocument.Parse(answer);
        var root = document.RootElement;
        Assert.Equal(["sentiment", "summary", "stars", "is_spam"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("positive", root.GetProperty("sentiment").GetString());
        Assert.Equal("summary: I love this", root.GetProperty("summary").GetString());
        Assert.InRange(root.GetProperty("stars").GetInt32(), 1, 5);
        Assert.True(root.GetProperty("is_spam").ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.Equal(answer, DeterministicModel.Answer(request));

        Assert.Equal("negative", JsonDocument.Parse(DeterministicModel.Answer(SchemaRequest(SentimentSchema, "Review: terrible and slow, but good")))
            .RootElement.GetProperty("sentiment").GetString());
        Assert.Equal("neutral", DeterministicModel.Sentiment("It arrived on Tuesday."));
    }

    [Fact]
    public void DeterministicModelCoversTypesTranslationAndEcho()
    {
        const string schema = """
            {
              "type": "object",
              "properties": {
                "text_es": { "type": "string" },
                "score": { "type": "number", "minimum": 0, "maximum": 1 },
                "count": { "type": "integer", "minimum": 10, "maximum": 12 },
                "tags": { "type": "array", "items": { "type": "string" } },
                "kind": { "type": "string", "enum": ["question", "complaint", "praise"] },
                "detail": { "$ref": "#/$defs/detail" }
              },
              "$defs": { "detail": { "type": "object", "properties": { "emotion": { "type": "string" } } } }
            }
            """;
        var answer = DeterministicModel.Answer(SchemaRequest(schema, "Translate this complaint: I love this product but the service was very slow"));
        _output.WriteLine(answer);
        using var document = JsonDocument.Parse(answer);
        var root = document.RootElement;
        Assert.Equal("Yo amo este producto pero el servicio fue muy lento", root.GetProperty("text_es").GetString());
        Assert.InRange(root.GetProperty("score").GetDouble(), 0, 1);
        Assert.InRange(root.GetProperty("count").GetInt32(), 10, 12);
        Assert.InRange(root.GetProperty("tags").GetArrayLength(), 1, 2);
        Assert.Equal("complaint", root.GetProperty("kind").GetString());
        Assert.Equal("neutral", root.GetProperty("detail").GetProperty("emotion").GetString());

        Assert.Equal("echo: hi", DeterministicModel.Answer(ModelRequest.Parse("""{"model":"m","messages":[{"role":"user","content":"hi"}]}""")));
        Assert.Equal(0x811C9DC5u, DeterministicModel.StableHash(string.Empty));
        Assert.Equal(0xE40C292Cu, DeterministicModel.StableHash("a"));
    }

    [Fact]
    public async Task OpenAiSdkRoundTripThroughMicrosoftExtensionsAi()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var schemaDocument = JsonDocument.Parse(SentimentSchema);
        IChatClient client = new ChatClient(
                "local-model",
                new ApiKeyCredential(server.ApiKey),
                new OpenAIClientOptions { Endpoint = server.BaseUrl })
            .AsIChatClient();

        var options = new ChatOptions { ResponseFormat = ChatResponseFormat.ForJsonSchema(schemaDocument.RootElement, "result") };
        var response = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.System, "Classify."), new ChatMessage(ChatRole.User, "I love this")],
            options);

        var request = Assert.Single(server.Requests);
        Assert.Equal(DeterministicModel.Answer(request), response.Text);
        using (var answer = JsonDocument.Parse(response.Text))
        {
            Assert.Equal("positive", answer.RootElement.GetProperty("sentiment").GetString());
        }

        Assert.Equal("json_schema", request.ResponseFormatType);
        Assert.Equal("result", request.SchemaName);
        Assert.NotNull(request.Schema);
        Assert.NotNull(response.Usage);
        Assert.Equal(DeterministicModel.CountTokens(response.Text), (int?)response.Usage.OutputTokenCount);
        _output.WriteLine($"default: Strict = {Describe(request.Strict)}");
        _output.WriteLine($"  response_format = {ResponseFormatJson(request)}");

        // Which ChatOptions.AdditionalProperties key makes Microsoft.Extensions.AI.OpenAI send "strict":true?
        foreach (var key in (string[])["strictJsonSchema", "strict"])
        {
            server.ClearRequests();
            var strictOptions = new ChatOptions
            {
                ResponseFormat = ChatResponseFormat.ForJsonSchema(schemaDocument.RootElement, "result"),
                AdditionalProperties = new() { [key] = true },
            };
            var strictResponse = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "I love this")], strictOptions);
            var strictRequest = Assert.Single(server.Requests);
            Assert.Equal(DeterministicModel.Answer(strictRequest), strictResponse.Text);
            _output.WriteLine($"AdditionalProperties[\"{key}\"] = true: Strict = {Describe(strictRequest.Strict)}; \"strict\":true in RawBody = {strictRequest.RawBody.Contains("\"strict\":true", StringComparison.Ordinal)}");
            _output.WriteLine($"  response_format = {ResponseFormatJson(strictRequest)}");
            if (key == "strict")
            {
                // The project relies on this: Microsoft.Extensions.AI.OpenAI reads the "strict" key (not "strictJsonSchema").
                Assert.True(strictRequest.Strict);
            }
        }
    }

    [Fact]
    public async Task StreamingRoundTrip()
    {
        await using var server = await LocalModelServer.StartAsync();
        IChatClient client = new ChatClient("local-model", new ApiKeyCredential(server.ApiKey), new OpenAIClientOptions { Endpoint = server.BaseUrl })
            .AsIChatClient();
        const string prompt = "A fairly long prompt so that the streamed echo needs several chunks: I love this";

        var text = new StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, prompt)]))
        {
            text.Append(update.Text);
        }

        Assert.Equal("echo: " + prompt, text.ToString());
        Assert.Contains("\"stream\":true", Assert.Single(server.Requests).RawBody, StringComparison.Ordinal);
    }

    private static ModelRequest SchemaRequest(string schema, string userText)
    {
        var body = JsonSerializer.Serialize(new
        {
            model = "m",
            messages = new[] { new { role = "user", content = userText } },
            response_format = new { type = "json_schema", json_schema = new { name = "result", schema = JsonDocument.Parse(schema).RootElement, strict = true } },
        });
        return ModelRequest.Parse(body);
    }

    private static string Describe(bool? value) => value?.ToString() ?? "(absent)";

    private static string ResponseFormatJson(ModelRequest request)
    {
        using var document = JsonDocument.Parse(request.RawBody);
        return document.RootElement.TryGetProperty("response_format", out var format) ? JsonSerializer.Serialize(format) : "(none)";
    }

    private static HttpClient CreateClient(LocalModelServer server)
    {
        var http = new HttpClient { BaseAddress = server.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.ApiKey);
        return http;
    }

    private static StringContent JsonBody(string json) => new(json, Encoding.UTF8, "application/json");
}
