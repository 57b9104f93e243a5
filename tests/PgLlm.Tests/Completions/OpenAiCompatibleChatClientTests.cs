using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Local;
using PgLlm.Queue;

namespace PgLlm.Tests.Completions;

/// <summary>PgLlm's own chat-completions client against real loopback endpoints: what it sends, what it reads, how it fails.</summary>
public sealed class OpenAiCompatibleChatClientTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static readonly JsonElement Schema = JsonDocument.Parse("""
        {
          "type": "object",
          "properties": {
            "stars": { "type": ["integer", "null"], "description": "1 to 5 stars", "minimum": 1, "maximum": 5 },
            "sentiment": { "type": "string", "enum": ["positive", "negative", "neutral"] }
          },
          "required": ["stars"]
        }
        """).RootElement.Clone();

    private static ChatOptions TaskOptions(string? model = "task-model") => new()
    {
        ModelId = model,
        Temperature = 0.3f,
        MaxOutputTokens = 300,
        ResponseFormat = ChatResponseFormat.ForJsonSchema(Schema, "result"),
        AdditionalProperties = new AdditionalPropertiesDictionary { ["strict"] = true },
    };

    private static List<ChatMessage> Prompt(string text) =>
        [new(ChatRole.System, "You grade reviews."), new(ChatRole.User, text)];

    [Fact]
    public async Task A_round_trip_returns_the_answer_its_usage_model_and_finish_reason()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "default-model");
        using var timeout = new CancellationTokenSource(Bound);

        var response = await client.GetResponseAsync(Prompt("The food was great"), TaskOptions(), timeout.Token);

        var request = Assert.Single(server.Requests);
        Assert.Equal(DeterministicModel.Answer(request), response.Text);
        var message = Assert.Single(response.Messages);
        Assert.Equal(ChatRole.Assistant, message.Role);
        Assert.IsType<TextContent>(Assert.Single(message.Contents));
        Assert.Equal("task-model", response.ModelId);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.StartsWith("chatcmpl-", response.ResponseId, StringComparison.Ordinal);
        Assert.Equal(response.ResponseId, message.MessageId);
        Assert.InRange(response.CreatedAt!.Value, request.ReceivedAt.AddSeconds(-2), request.ReceivedAt.AddSeconds(2));
        var promptTokens = DeterministicModel.CountTokens("You grade reviews.The food was great");
        var answerTokens = DeterministicModel.CountTokens(response.Text);
        Assert.Equal(promptTokens, response.Usage!.InputTokenCount);
        Assert.Equal(answerTokens, response.Usage.OutputTokenCount);
        Assert.Equal(promptTokens + answerTokens, response.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task The_finish_reason_length_and_an_unknown_one_are_reported()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        server.Responder = _ => ModelReply.Json("{\"stars\": 4") with { FinishReason = "length" };
        var truncated = await client.GetResponseAsync(Prompt("x"));
        server.Responder = _ => ModelReply.Json("{}") with { FinishReason = "eos" };
        var unknown = await client.GetResponseAsync(Prompt("x"));

        Assert.Equal(ChatFinishReason.Length, truncated.FinishReason);
        Assert.Equal("{\"stars\": 4", truncated.Text);
        Assert.Equal(new ChatFinishReason("eos"), unknown.FinishReason);
    }

    [Fact]
    public async Task The_request_carries_the_model_messages_options_and_the_adapted_strict_schema()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "default-model");

        await client.GetResponseAsync(Prompt("Café \"quoted\" <b>&</b>"), TaskOptions());

        var request = Assert.Single(server.Requests);
        Assert.Equal("task-model", request.Model);
        Assert.Equal(["system", "user"], request.Messages.Select(m => m.Role));
        Assert.Equal("You grade reviews.", request.SystemText);
        Assert.Equal("Café \"quoted\" <b>&</b>", request.UserText);
        Assert.Equal(0.3, request.Temperature!.Value, 6);
        Assert.Equal(300, request.MaxTokens);
        Assert.Equal("json_schema", request.ResponseFormatType);
        Assert.Equal("result", request.SchemaName);
        Assert.True(request.Strict);

        using var body = JsonDocument.Parse(request.RawBody);
        Assert.Equal(300, body.RootElement.GetProperty("max_completion_tokens").GetInt32());
        Assert.False(body.RootElement.TryGetProperty("max_tokens", out _));
        // A single text part goes as a plain string.
        Assert.Equal(JsonValueKind.String, body.RootElement.GetProperty("messages")[1].GetProperty("content").ValueKind);

        // Adapted to OpenAI's structured outputs, as its SDK adapter did: every property required, no others
        // allowed, and keywords strict mode rejects moved into the description.
        var schema = request.Schema!.Value;
        Assert.False(schema.GetProperty("additionalProperties").GetBoolean());
        Assert.Equal(["stars", "sentiment"], schema.GetProperty("required").EnumerateArray().Select(e => e.GetString()));
        var stars = schema.GetProperty("properties").GetProperty("stars");
        Assert.Equal("1 to 5 stars\nminimum: 1\nmaximum: 5", stars.GetProperty("description").GetString());
        Assert.False(stars.TryGetProperty("minimum", out _));
        Assert.Equal(["positive", "negative", "neutral"],
            schema.GetProperty("properties").GetProperty("sentiment").GetProperty("enum").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task The_default_model_a_schemaless_json_format_and_strict_false_are_sent_as_asked()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(new Uri(server.BaseUrl.ToString().TrimEnd('/')), server.ApiKey, "default-model");

        await client.GetResponseAsync(Prompt("a"), new ChatOptions { ResponseFormat = ChatResponseFormat.Json });
        await client.GetResponseAsync(Prompt("b"), new ChatOptions
        {
            ResponseFormat = ChatResponseFormat.ForJsonSchema(Schema),
            AdditionalProperties = new AdditionalPropertiesDictionary { ["strict"] = false },
        });
        await client.GetResponseAsync(Prompt("c"));

        var requests = server.Requests;
        Assert.Equal(3, requests.Count);
        Assert.All(requests, r => Assert.Equal("default-model", r.Model));
        Assert.Equal("json_object", requests[0].ResponseFormatType);
        Assert.Null(requests[0].Schema);
        Assert.Equal("json_schema", requests[1].ResponseFormatType);
        Assert.Equal("result", requests[1].SchemaName);
        Assert.False(requests[1].Strict);
        Assert.Null(requests[2].ResponseFormatType);
        Assert.Null(requests[2].Temperature);
        Assert.Null(requests[2].MaxTokens);
    }

    [Fact]
    public async Task Images_go_as_image_parts_a_url_as_itself_and_bytes_as_a_data_url()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");
        byte[] png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3];
        var message = new ChatMessage(ChatRole.User,
        [
            new TextContent("Read this: "),
            new UriContent(new Uri("https://images.example.com/receipt.png"), "image/*"),
            new TextContent(" and this: "),
            new DataContent(png, "image/png"),
        ]);

        await client.GetResponseAsync([message], TaskOptions());

        var sent = Assert.Single(Assert.Single(server.Requests).Messages);
        Assert.Equal(["https://images.example.com/receipt.png", "data:image/png;base64," + Convert.ToBase64String(png)], sent.ImageUrls);
        Assert.Equal("Read this: \n and this: ", sent.Text);
        using var body = JsonDocument.Parse(server.Requests[0].RawBody);
        Assert.Equal(
            ["text", "image_url", "text", "image_url"],
            body.RootElement.GetProperty("messages")[0].GetProperty("content").EnumerateArray().Select(p => p.GetProperty("type").GetString()));
    }

    [Fact]
    public async Task The_key_is_sent_as_a_bearer_token_and_no_key_sends_no_authorization_header()
    {
        await using var endpoint = await RawEndpoint.StartAsync(_ => (200, Completion("{}"), null));
        using (var withKey = new OpenAiCompatibleChatClient(endpoint.BaseUrl, "k", "m"))
        {
            await withKey.GetResponseAsync(Prompt("x"));
        }

        using (var withoutKey = new OpenAiCompatibleChatClient(endpoint.BaseUrl, null, "m"))
        {
            await withoutKey.GetResponseAsync(Prompt("x"));
        }

        using (var emptyKey = new OpenAiCompatibleChatClient(endpoint.BaseUrl, "", "m"))
        {
            await emptyKey.GetResponseAsync(Prompt("x"));
        }

        var requests = endpoint.Requests.ToArray();
        Assert.Equal(3, requests.Length);
        Assert.All(requests, r => Assert.Equal("POST /v1/chat/completions", r.Target));
        Assert.All(requests, r => Assert.StartsWith("application/json", r.ContentType, StringComparison.Ordinal));
        Assert.Equal("Bearer k", requests[0].Authorization);
        Assert.Null(requests[1].Authorization);
        Assert.Null(requests[2].Authorization);
    }

    [Fact]
    public async Task A_wrong_key_is_a_401_the_worker_does_not_retry()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, "not-the-key", "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x")));

        Assert.Equal(401, error.Status);
        Assert.Equal(FailureKind.Permanent, FailureClassifier.Classify(error).Kind);
    }

    [Fact]
    public async Task A_500_is_transient_and_quotes_the_endpoints_error_message()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = _ => ModelReply.Error(500, "upstream exploded");
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x"), TaskOptions()));

        Assert.Equal(500, error.Status);
        Assert.Equal("HTTP 500: upstream exploded", error.Message);
        Assert.Contains("\"upstream exploded\"", error.ResponseBody, StringComparison.Ordinal);
        Assert.Null(error.RetryAfter);
        var failure = FailureClassifier.Classify(error);
        Assert.Equal(FailureKind.Transient, failure.Kind);
        Assert.Equal("model endpoint returned HTTP 500: upstream exploded", failure.Message);
        Assert.Null(failure.RetryAfter);
    }

    [Fact]
    public async Task A_400_is_permanent()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = _ => ModelReply.Error(400, "Invalid schema for response_format 'result'");
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x"), TaskOptions()));

        Assert.Equal(400, error.Status);
        var failure = FailureClassifier.Classify(error);
        Assert.Equal(FailureKind.Permanent, failure.Kind);
        Assert.Equal("model endpoint returned HTTP 400: Invalid schema for response_format 'result'", failure.Message);
    }

    [Fact]
    public async Task A_body_that_is_not_json_is_quoted_up_to_500_characters_and_a_gateway_error_is_transient()
    {
        var page = "<html>Bad gateway</html>\n" + new string('x', 2000);
        await using var endpoint = await RawEndpoint.StartAsync(_ => (502, page, null));
        using var client = new OpenAiCompatibleChatClient(endpoint.BaseUrl, null, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x")));

        Assert.Equal(502, error.Status);
        Assert.Equal(page[..500], error.ResponseBody);
        Assert.StartsWith("HTTP 502: <html>Bad gateway</html>", error.Message, StringComparison.Ordinal);
        Assert.True(error.Message.Length < 600);
        var failure = FailureClassifier.Classify(error);
        Assert.Equal(FailureKind.Transient, failure.Kind);
        Assert.Equal("model endpoint returned HTTP 502: <html>Bad gateway</html>", failure.Message);
    }

    [Theory]
    [InlineData(429, "Retry-After", "2", 2000)]
    [InlineData(429, "retry-after-ms", "1500", 1500)]
    [InlineData(503, "Retry-After", "0.25", 250)]
    public async Task A_throttle_or_outage_carries_the_wait_the_endpoint_asked_for(int status, string header, string value, int expectedMs)
    {
        await using var endpoint = await RawEndpoint.StartAsync(_ => (status, """{"error":{"message":"slow down"}}""", (header, value)));
        using var client = new OpenAiCompatibleChatClient(endpoint.BaseUrl, null, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x")));

        Assert.Equal(status, error.Status);
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMs), error.RetryAfter);
        var failure = FailureClassifier.Classify(error);
        Assert.Equal(FailureKind.Transient, failure.Kind);
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMs), failure.RetryAfter);
        Assert.Equal(status == 429, RateLimitingChatClient.IsThrottled(error, out var throttledFor));
        Assert.Equal(status == 429 ? TimeSpan.FromMilliseconds(expectedMs) : (TimeSpan?)null, throttledFor);
    }

    [Fact]
    public async Task A_retry_after_date_becomes_the_wait_until_then()
    {
        var date = DateTimeOffset.UtcNow.AddSeconds(30).ToString("R", CultureInfo.InvariantCulture);
        await using var endpoint = await RawEndpoint.StartAsync(_ => (429, "{}", ("Retry-After", date)));
        using var client = new OpenAiCompatibleChatClient(endpoint.BaseUrl, null, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync(Prompt("x")));

        Assert.InRange(error.RetryAfter!.Value, TimeSpan.FromSeconds(25), TimeSpan.FromSeconds(31));
    }

    [Theory]
    [InlineData("this is not json", "not valid JSON")]
    [InlineData("{\"id\": \"x\", \"choices\": [", "not valid JSON")]
    [InlineData("{\"id\": \"x\", \"object\": \"chat.completion\"}", "has no choices")]
    [InlineData("{\"id\": \"x\", \"choices\": []}", "has no choices")]
    [InlineData("[1, 2]", "not a chat completion")]
    public async Task A_2xx_that_is_not_a_completion_is_a_clear_error_the_worker_retries(string body, string expected)
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = _ => ModelReply.Raw(200, body);
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetResponseAsync(Prompt("x"), TaskOptions()));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains(body, error.Message, StringComparison.Ordinal);
        Assert.Equal(FailureKind.Transient, FailureClassifier.Classify(error).Kind);
    }

    [Fact]
    public async Task A_refusal_comes_back_as_the_answer_text_so_the_check_quotes_it()
    {
        await using var endpoint = await RawEndpoint.StartAsync(_ => (200, """
            {"id":"r1","model":"m","created":1700000000,
             "choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}
            """, null));
        using var client = new OpenAiCompatibleChatClient(endpoint.BaseUrl, null, "m");

        var response = await client.GetResponseAsync(Prompt("x"));

        Assert.Equal("I can't help with that.", response.Text);
        Assert.Equal("I can't help with that.", response.Messages[0].AdditionalProperties?["refusal"]);
        Assert.Null(response.Usage);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1700000000), response.CreatedAt);
    }

    [Fact]
    public async Task Cancellation_ends_the_call_at_once()
    {
        await using var server = await LocalModelServer.StartAsync(new LocalModelServerOptions { Latency = TimeSpan.FromSeconds(20) });
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var started = DateTimeOffset.UtcNow;

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync(Prompt("x"), TaskOptions(), cancel.Token));

        Assert.True(DateTimeOffset.UtcNow - started < TimeSpan.FromSeconds(10), "the call outlived its token");
        Assert.Equal(1, server.RequestCount);
    }

    [Fact]
    public async Task One_options_instance_shared_by_50_concurrent_calls_gives_each_its_own_answer()
    {
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = request => ModelReply.Json(JsonSerializer.Serialize(new { echo = request.LastUserText, model = request.Model }));
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");
        var options = TaskOptions();
        using var timeout = new CancellationTokenSource(Bound);

        var answers = await Task.WhenAll(Enumerable.Range(0, 50).Select(async i =>
        {
            var text = $"review {i}: " + new string((char)('a' + (i % 26)), i * 37);
            var response = await client.GetResponseAsync(Prompt(text), options, timeout.Token);
            return (text, response);
        }));

        foreach (var (text, response) in answers)
        {
            using var answer = JsonDocument.Parse(response.Text);
            Assert.Equal(text, answer.RootElement.GetProperty("echo").GetString());
            Assert.Equal("task-model", answer.RootElement.GetProperty("model").GetString());
        }

        var requests = server.Requests;
        Assert.Equal(50, requests.Count);
        Assert.All(requests, r => Assert.True(r.Strict));
        Assert.All(requests, r => Assert.Equal(300, r.MaxTokens));
        Assert.Single(requests.Select(r => r.Schema!.Value.GetRawText()).Distinct());
        Assert.Equal(50, answers.Select(a => a.response.ResponseId).Distinct().Count());
    }

    [Fact]
    public async Task Options_sharing_a_response_format_send_their_own_model_limits_and_strictness()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");
        var options = TaskOptions("first");

        await client.GetResponseAsync(Prompt("x"), options);
        var clone = options.Clone();
        clone.ModelId = "second";
        clone.MaxOutputTokens = 50;
        clone.AdditionalProperties = new AdditionalPropertiesDictionary { ["strict"] = false };
        await client.GetResponseAsync(Prompt("x"), clone);
        await client.GetResponseAsync(Prompt("x"), options);

        var requests = server.Requests;
        Assert.Same(options.ResponseFormat, clone.ResponseFormat);
        Assert.Equal(["first", "second", "first"], requests.Select(r => r.Model));
        Assert.Equal([300, 50, 300], requests.Select(r => r.MaxTokens));
        Assert.Equal([true, false, true], requests.Select(r => r.Strict));
        Assert.Single(requests.Select(r => r.Schema!.Value.GetRawText()).Distinct());
    }

    [Fact]
    public async Task Streaming_yields_the_whole_answer_at_once()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Prompt("The food was great"), TaskOptions()))
        {
            updates.Add(update);
        }

        var request = Assert.Single(server.Requests);
        Assert.DoesNotContain("\"stream\"", request.RawBody, StringComparison.Ordinal);
        var response = updates.ToChatResponse();
        Assert.Equal(DeterministicModel.Answer(request), response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
    }

    [Fact]
    public void Its_metadata_names_the_provider_endpoint_and_default_model()
    {
        var baseUrl = new Uri("http://127.0.0.1:9/v1");
        using IChatClient client = new OpenAiCompatibleChatClient(baseUrl, null, "default-model");

        var metadata = client.GetService<ChatClientMetadata>();

        Assert.NotNull(metadata);
        Assert.Equal("openai", metadata.ProviderName);
        Assert.Equal(baseUrl, metadata.ProviderUri);
        Assert.Equal("default-model", metadata.DefaultModelId);
        Assert.Same(client, client.GetService<OpenAiCompatibleChatClient>());
        Assert.Null(client.GetService<HttpClient>());
    }

    [Fact]
    public async Task An_unreachable_endpoint_is_an_http_request_exception()
    {
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        using var client = new OpenAiCompatibleChatClient(new Uri($"http://127.0.0.1:{port}/v1"), null, "m");

        var error = await Assert.ThrowsAsync<HttpRequestException>(() => client.GetResponseAsync(Prompt("x")));

        Assert.StartsWith("model endpoint unreachable", FailureClassifier.Classify(error).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_factory_builds_this_client_behind_the_rate_limiter_and_the_worker_sees_its_answers()
    {
        await using var server = await LocalModelServer.StartAsync();
        using var client = ChatClientFactory.Create(TestOptions.For(server));

        Assert.NotNull(client.GetService<OpenAiCompatibleChatClient>());
        Assert.NotNull(client.GetService<RateLimitingChatClient>());
        var response = await client.GetResponseAsync(Prompt("The food was great"), TaskOptions());
        Assert.Equal(DeterministicModel.Answer(Assert.Single(server.Requests)), response.Text);
    }

    private static string Completion(string content) => JsonSerializer.Serialize(new
    {
        id = "chatcmpl-raw",
        @object = "chat.completion",
        created = 1700000000,
        model = "m",
        choices = new[] { new { index = 0, message = new { role = "assistant", content }, finish_reason = "stop" } },
        usage = new { prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 },
    });

    /// <summary>A request as <see cref="RawEndpoint"/> saw it.</summary>
    private sealed record RawRequest(string Target, string? Authorization, string? ContentType, string Body);

    /// <summary>A bare loopback HTTP endpoint answering with a crafted status, body and one optional header.</summary>
    private sealed class RawEndpoint : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private RawEndpoint(WebApplication app, Uri baseUrl)
        {
            _app = app;
            BaseUrl = baseUrl;
        }

        public Uri BaseUrl { get; }

        public ConcurrentQueue<RawRequest> Requests { get; } = new();

        public static async Task<RawEndpoint> StartAsync(Func<RawRequest, (int Status, string Body, (string Name, string Value)? Header)> answer)
        {
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
            builder.Configuration.Sources.Clear();
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            RawEndpoint? endpoint = null;
            app.Run(async context =>
            {
                using var reader = new StreamReader(context.Request.Body);
                var request = new RawRequest(
                    $"{context.Request.Method} {context.Request.Path}",
                    context.Request.Headers.Authorization.Count == 0 ? null : context.Request.Headers.Authorization.ToString(),
                    context.Request.ContentType,
                    await reader.ReadToEndAsync(context.RequestAborted));
                endpoint!.Requests.Enqueue(request);
                var (status, body, header) = answer(request);
                context.Response.StatusCode = status;
                context.Response.ContentType = "application/json";
                if (header is { } extra)
                {
                    context.Response.Headers[extra.Name] = extra.Value;
                }

                await context.Response.WriteAsync(body, context.RequestAborted);
            });
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            endpoint = new RawEndpoint(app, new Uri(new Uri(address), "/v1"));
            return endpoint;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
