using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace PgLlm.Local;

/// <summary>
/// A real HTTP server (Kestrel on 127.0.0.1, random port) that speaks the OpenAI chat-completions protocol:
/// <c>POST /v1/chat/completions</c> (also <c>/chat/completions</c>) and <c>GET /v1/models</c>. Answers come from
/// <see cref="Responder"/> when set, otherwise from <see cref="DeterministicModel"/>. It also speaks the OpenAI
/// Files and Batch APIs (<c>/v1/files</c>, <c>/v1/batches</c>) for batches of chat-completions requests, answered
/// the same way, with knobs for fault tests (<see cref="BatchCompletionDelay"/>, <see cref="BatchFailedLineFraction"/>,
/// <see cref="BatchMissingLineFraction"/>, <see cref="BatchExpiresAfter"/>, <see cref="BatchExpireAfterLines"/>,
/// <see cref="HoldAfterUpload"/>, <see cref="HoldAfterBatchCreate"/>).
/// </summary>
public sealed partial class LocalModelServer : IAsyncDisposable
{
    private const string JsonContentType = "application/json";

    private readonly WebApplication _app;
    private readonly LocalModelServerOptions _options;
    private readonly Lock _recordGate = new();
    private readonly Queue<ModelRequest> _recorded = new();
    private readonly IReadOnlyList<string> _models;
    private readonly AnswerClock _clock = new();
    private readonly LocalBatchApi _batchApi;
    private Func<ModelRequest, ModelReply>? _responder;
    private long _latencyTicks;
    private int _requestCount;
    private long _nextId;
    private int _disposed;

    private LocalModelServer(WebApplication app, LocalModelServerOptions options)
    {
        _app = app;
        _options = options;
        _models = options.Models.ToArray();
        _responder = options.Responder;
        _latencyTicks = options.Latency.Ticks;
        ApiKey = options.ApiKey;
        BaseUrl = new Uri("http://127.0.0.1/v1/");
        InitializeBatchKnobs(options);
        _batchApi = new LocalBatchApi(this);
    }

    /// <summary>Base address for OpenAI clients: <c>http://127.0.0.1:&lt;port&gt;/v1/</c>.</summary>
    public Uri BaseUrl { get; private set; }

    /// <summary>TCP port the server listens on.</summary>
    public int Port => BaseUrl.Port;

    /// <summary>The API key clients must send as <c>Authorization: Bearer &lt;key&gt;</c> (an empty key disables the check).</summary>
    public string ApiKey { get; }

    /// <summary>Delay before every answer (on top of <see cref="ModelReply.Delay"/>). Thread-safe; default zero.</summary>
    public TimeSpan Latency
    {
        get => new(Interlocked.Read(ref _latencyTicks));
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.Zero);
            Interlocked.Exchange(ref _latencyTicks, value.Ticks);
        }
    }

    /// <summary>Decides the answer to each request; null for <see cref="DeterministicModel"/>. Thread-safe.</summary>
    /// <remarks>Called concurrently from request threads. An exception becomes a 500 OpenAI-style error.</remarks>
    public Func<ModelRequest, ModelReply>? Responder
    {
        get => Volatile.Read(ref _responder);
        set => Volatile.Write(ref _responder, value);
    }

    /// <summary>
    /// Snapshot of the recorded chat-completions requests, oldest first (at most the last 100,000 by default),
    /// including the answered lines of batches (<see cref="ModelRequest.ViaBatch"/> true).
    /// </summary>
    public IReadOnlyList<ModelRequest> Requests
    {
        get
        {
            lock (_recordGate)
            {
                return _recorded.ToArray();
            }
        }
    }

    /// <summary>
    /// Number of authorized chat-completions requests received since start or the last <see cref="ClearRequests"/>,
    /// batch lines answered included (not the lines failed or left out by the fault knobs).
    /// </summary>
    /// <remarks>Counts every request, also those dropped from (or never put in) <see cref="Requests"/>.</remarks>
    public int RequestCount => Volatile.Read(ref _requestCount);

    /// <summary>Forgets the recorded requests and resets <see cref="RequestCount"/>.</summary>
    public void ClearRequests()
    {
        lock (_recordGate)
        {
            _recorded.Clear();
            Interlocked.Exchange(ref _requestCount, 0);
        }
    }

    /// <summary>
    /// Back to the default behaviour for the next test on a shared server: the deterministic answers
    /// (<see cref="Responder"/> cleared), no added <see cref="Latency"/>, the batch knobs at their defaults
    /// (zero delay and fractions, no expiry, no holds), and no recorded requests. Files, batches and the
    /// batch counters are kept.
    /// </summary>
    public void Reset()
    {
        Responder = null;
        Latency = TimeSpan.Zero;
        ResetBatchKnobs();
        ClearRequests();
    }

    /// <summary>Starts a server on <c>http://127.0.0.1:0</c> (a free port).</summary>
    /// <param name="options">Server options; null for the defaults.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <returns>The running server.</returns>
    public static async Task<LocalModelServer> StartAsync(LocalModelServerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new LocalModelServerOptions();
        ArgumentNullException.ThrowIfNull(options.ApiKey, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxRecordedRequests, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchCompletionDelay, TimeSpan.Zero, nameof(options));
        CheckFraction(options.BatchFailedLineFraction);
        CheckFraction(options.BatchMissingLineFraction);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = [],
            ApplicationName = typeof(LocalModelServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = Environments.Production,
        });

        // Isolation: no appsettings.json / ASPNETCORE_* endpoints, no console logging.
        builder.Configuration.Sources.Clear();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        options.ConfigureLogging?.Invoke(builder.Logging);
        builder.WebHost.UseKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = 256L * 1024 * 1024;
            kestrel.Listen(IPAddress.Loopback, 0);
        });
        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = options.InlineScheduling);

        var app = builder.Build();
        var server = new LocalModelServer(app, options);
        RequestDelegate chat = server.HandleChatAsync;
        RequestDelegate models = server.HandleModelsAsync;
        app.MapPost("/v1/chat/completions", chat);
        app.MapPost("/chat/completions", chat);
        app.MapGet("/v1/models", models);
        app.MapGet("/models", models);
        server._batchApi.Map(app);
        app.MapFallback(server.HandleUnknownAsync);

        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
                ?? throw new InvalidOperationException("Kestrel did not report its listening address.");
            var port = new Uri(address).Port;
            server.BaseUrl = new Uri($"http://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}/v1/");
            return server;
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Stops Kestrel (aborting pending delayed answers) and releases it. Never throws.</summary>
    /// <returns>A task that completes when the server has stopped.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _app.StopAsync(timeout.Token).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Dispose must never throw.
        catch (Exception)
        {
            // Best effort.
        }

        try
        {
            await _app.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Best effort.
        }

        try
        {
            await _batchApi.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Best effort.
        }

        _clock.Dispose();
#pragma warning restore CA1031
    }

    private async Task HandleChatAsync(HttpContext context)
    {
        if (!IsAuthorized(context))
        {
            await WriteErrorAsync(context, ModelReply.Error(401, "Incorrect API key provided.")).ConfigureAwait(false);
            return;
        }

        var receivedAt = DateTimeOffset.UtcNow;
        string body;
        using (var reader = new StreamReader(context.Request.Body, Encoding.UTF8))
        {
            body = await reader.ReadToEndAsync(context.RequestAborted).ConfigureAwait(false);
        }

        var (parsed, reply) = AnswerBody(body, root: null, receivedAt);
        if (parsed is null)
        {
            await WriteErrorAsync(context, reply).ConfigureAwait(false);
            return;
        }

        var delay = Latency + reply.Delay;
        if (delay > TimeSpan.Zero)
        {
            using var abort = CancellationTokenSource.CreateLinkedTokenSource(
                context.RequestAborted,
                _app.Lifetime.ApplicationStopping);
            try
            {
                await _clock.DelayAsync(delay, abort.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                context.Abort();
                return;
            }
        }

        if (reply.RawBody is not null)
        {
            context.Response.StatusCode = reply.StatusCode;
            context.Response.ContentType = JsonContentType;
            SetRetryAfter(context, reply);
            await context.Response.WriteAsync(reply.RawBody, context.RequestAborted).ConfigureAwait(false);
            return;
        }

        if (reply.Content is null)
        {
            await WriteErrorAsync(context, reply).ConfigureAwait(false);
            return;
        }

        var id = NextCompletionId();
        var created = receivedAt.ToUnixTimeSeconds();
        context.Response.StatusCode = reply.StatusCode;
        SetRetryAfter(context, reply);
        if (parsed.Stream)
        {
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            foreach (var chunk in ChatCompletionsProtocol.StreamChunks(id, created, parsed.Request, reply, parsed.IncludeUsage))
            {
                await context.Response.Body.WriteAsync("data: "u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
                await context.Response.Body.WriteAsync(chunk, context.RequestAborted).ConfigureAwait(false);
                await context.Response.Body.WriteAsync("\n\n"u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
            }

            return;
        }

        var payload = ChatCompletionsProtocol.Completion(id, created, parsed.Request, reply);
        context.Response.ContentType = JsonContentType;
        context.Response.ContentLength = payload.Length;
        await context.Response.Body.WriteAsync(payload, context.RequestAborted).ConfigureAwait(false);
    }

    private async Task HandleModelsAsync(HttpContext context)
    {
        if (!IsAuthorized(context))
        {
            await WriteErrorAsync(context, ModelReply.Error(401, "Incorrect API key provided.")).ConfigureAwait(false);
            return;
        }

        var payload = ChatCompletionsProtocol.ModelList(_models, DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        context.Response.ContentType = JsonContentType;
        await context.Response.Body.WriteAsync(payload, context.RequestAborted).ConfigureAwait(false);
    }

    private Task HandleUnknownAsync(HttpContext context)
        => WriteErrorAsync(context, ModelReply.Error(404, $"Unknown endpoint: {context.Request.Method} {context.Request.Path}"));

    /// <summary>
    /// Parses, records and answers one chat-completions request body: the one path shared by
    /// <c>POST /v1/chat/completions</c> and the lines of a batch. A body that does not parse gives no
    /// request and a 400 reply; otherwise the reply of <see cref="Responder"/> or <see cref="DeterministicModel"/>.
    /// </summary>
    /// <param name="body">The request body as text (recorded as <see cref="ModelRequest.RawBody"/>).</param>
    /// <param name="root">The body already parsed (a batch line's <c>body</c>), or null to parse <paramref name="body"/>.</param>
    /// <param name="receivedAt">Receive time to record.</param>
    internal (ParsedChatRequest? Parsed, ModelReply Reply) AnswerBody(string body, JsonElement? root, DateTimeOffset receivedAt)
    {
        ParsedChatRequest parsed;
        try
        {
            parsed = root is { } element
                ? ChatCompletionsProtocol.ParseRequest(element, body, receivedAt, viaBatch: true)
                : ChatCompletionsProtocol.ParseRequest(body, receivedAt);
        }
        catch (JsonException ex)
        {
            return (null, ModelReply.Error(400, "Invalid chat-completions request: " + ex.Message));
        }

        Record(parsed.Request);
        return (parsed, Answer(parsed.Request));
    }

    /// <summary>A new <c>chatcmpl-…</c> id, unique within this server.</summary>
    internal string NextCompletionId()
        => "chatcmpl-" + Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);

    private ModelReply Answer(ModelRequest request)
    {
        try
        {
            var responder = Responder;
            return responder is null ? ModelReply.Json(DeterministicModel.Answer(request)) : responder(request);
        }
#pragma warning disable CA1031 // A failing responder becomes an HTTP 500, like a failing model backend.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return ModelReply.Error(500, $"The local model failed: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private void Record(ModelRequest request)
    {
        lock (_recordGate)
        {
            Interlocked.Increment(ref _requestCount);
            if (!_options.RecordRequests || _options.MaxRecordedRequests == 0)
            {
                return;
            }

            _recorded.Enqueue(request);
            while (_recorded.Count > _options.MaxRecordedRequests)
            {
                _recorded.Dequeue();
            }
        }
    }

    internal bool IsAuthorized(HttpContext context)
    {
        if (ApiKey.Length == 0)
        {
            return true;
        }

        var header = context.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        return header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)
            && string.Equals(header[scheme.Length..].Trim(), ApiKey, StringComparison.Ordinal);
    }

    internal static async Task WriteErrorAsync(HttpContext context, ModelReply reply, string? param = null)
    {
        var payload = ChatCompletionsProtocol.ErrorBody(reply.StatusCode, reply.ErrorMessage ?? "Error", reply.ErrorType, param);
        context.Response.StatusCode = reply.StatusCode;
        context.Response.ContentType = JsonContentType;
        SetRetryAfter(context, reply);
        await context.Response.Body.WriteAsync(payload, context.RequestAborted).ConfigureAwait(false);
    }

    private static void SetRetryAfter(HttpContext context, ModelReply reply)
    {
        if (reply.RetryAfter is not { } retryAfter)
        {
            return;
        }

        var clamped = retryAfter < TimeSpan.Zero ? TimeSpan.Zero : retryAfter;
        context.Response.Headers.RetryAfter = Math.Ceiling(clamped.TotalSeconds).ToString(CultureInfo.InvariantCulture);
        context.Response.Headers["retry-after-ms"] = Math.Ceiling(clamped.TotalMilliseconds).ToString(CultureInfo.InvariantCulture);
    }
}
