using Microsoft.Extensions.Logging;

namespace PgLlm.Local;

/// <summary>Options for <see cref="LocalModelServer.StartAsync(LocalModelServerOptions?, CancellationToken)"/>.</summary>
public sealed class LocalModelServerOptions
{
    /// <summary>The API key clients must send as <c>Authorization: Bearer &lt;key&gt;</c>. Default <c>"local-test-key"</c>.</summary>
    public string ApiKey { get; set; } = "local-test-key";

    /// <summary>Initial value of <see cref="LocalModelServer.Latency"/>. Default zero.</summary>
    public TimeSpan Latency { get; set; }

    /// <summary>Initial value of <see cref="LocalModelServer.Responder"/>; null for <see cref="DeterministicModel"/>.</summary>
    public Func<ModelRequest, ModelReply>? Responder { get; set; }

    /// <summary>Whether requests are kept in <see cref="LocalModelServer.Requests"/>. Default true.</summary>
    public bool RecordRequests { get; set; } = true;

    /// <summary>How many recorded requests are kept (oldest dropped first). Default 100,000.</summary>
    public int MaxRecordedRequests { get; set; } = 100_000;

    /// <summary>Model ids listed by <c>GET /v1/models</c>. Default <c>["local-model"]</c>; any model name is accepted.</summary>
    public IReadOnlyList<string> Models { get; set; } = ["local-model"];

    /// <summary>
    /// Whether Kestrel runs request handling on the thread that completed the socket read, instead of
    /// handing every read to the thread pool (<c>SocketTransportOptions.UnsafePreferInlineScheduling</c>).
    /// Saves thread switches per request: for measurements, where the stand-in model shares the cores
    /// with what is measured. Only for a <see cref="Responder"/> that never blocks its thread (the default
    /// one does not). Default false.
    /// </summary>
    public bool InlineScheduling { get; set; }

    /// <summary>Initial value of <see cref="LocalModelServer.BatchCompletionDelay"/>. Default zero.</summary>
    public TimeSpan BatchCompletionDelay { get; set; }

    /// <summary>Initial value of <see cref="LocalModelServer.BatchFailedLineFraction"/> (0..1). Default 0.</summary>
    public double BatchFailedLineFraction { get; set; }

    /// <summary>Initial value of <see cref="LocalModelServer.BatchMissingLineFraction"/> (0..1). Default 0.</summary>
    public double BatchMissingLineFraction { get; set; }

    /// <summary>
    /// Optional logging setup for the embedded Kestrel host. By default no logging provider is registered
    /// (nothing reaches the console) and the minimum level is Warning.
    /// </summary>
    public Action<ILoggingBuilder>? ConfigureLogging { get; set; }
}
