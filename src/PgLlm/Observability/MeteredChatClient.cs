using Microsoft.Extensions.AI;
using PgLlm.Completions;

namespace PgLlm.Observability;

/// <summary>
/// Kept only for the worker's call site until it calls <see cref="ChatClientFactory.WithTelemetry"/> itself;
/// the metering is Microsoft.Extensions.AI's OpenTelemetry stage now. Delete this file then.
/// </summary>
internal static class MeteredChatClient
{
    /// <summary>Same as <see cref="ChatClientFactory.WithTelemetry"/>.</summary>
    public static IChatClient Wrap(IChatClient client) => ChatClientFactory.WithTelemetry(client);
}
