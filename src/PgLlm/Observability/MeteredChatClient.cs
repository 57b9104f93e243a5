using System.Diagnostics;
using Microsoft.Extensions.AI;

namespace PgLlm.Observability;

/// <summary>
/// Records every model call's duration and token usage on <see cref="PgLlmMetrics"/>
/// (<c>gen_ai.client.operation.duration</c>, <c>gen_ai.client.token.usage</c>).
/// </summary>
internal sealed class MeteredChatClient(IChatClient innerClient) : DelegatingChatClient(innerClient)
{
    /// <summary>Wraps <paramref name="client"/> unless it already is metered.</summary>
    public static IChatClient Wrap(IChatClient client) =>
        client.GetService<MeteredChatClient>() is null ? new MeteredChatClient(client) : client;

    public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var response = await base.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
            PgLlmMetrics.RecordModelCall(options?.ModelId ?? response.ModelId, Stopwatch.GetElapsedTime(started),
                response.Usage?.InputTokenCount, response.Usage?.OutputTokenCount, null);
            return response;
        }
        catch (Exception ex)
        {
            PgLlmMetrics.RecordModelCall(options?.ModelId, Stopwatch.GetElapsedTime(started), null, null, ex.GetType().FullName);
            throw;
        }
    }
}
