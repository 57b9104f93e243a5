namespace PgLlm.Hosting;

/// <summary>
/// Process-wide runtime settings for a process that runs only the PgLlm worker (the <c>pgllm worker</c>
/// command does this at its start). Call <see cref="Configure()"/> first thing in <c>Main</c>, before
/// anything opens a socket.
/// </summary>
/// <remarks>
/// <para>
/// It turns on .NET's inline socket completions (<c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c>):
/// the continuation of an answer's socket read runs on the thread that polled the socket, instead of
/// being handed to a thread-pool thread that must be woken for it. The worker's continuations are short
/// and never block, so this is safe for it; it halves the worker's thread switches per job (measured in
/// docs/benchmarks.md), and every switch is CPU taken from the database when both share a host.
/// </para>
/// <para>
/// Not for a process that also runs other code: a continuation that blocks would stall every socket
/// of the process. The runtime reads the variable once, when sockets are first used, so a call after
/// that has no effect; a value already set in the environment (either way) is kept.
/// </para>
/// </remarks>
public static class DedicatedWorkerProcess
{
    /// <summary>The runtime's environment variable for inline socket completions (Linux, macOS).</summary>
    public const string InlineSocketCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>Turns on inline socket completions for this process, unless the environment already decides.</summary>
    /// <returns>The setting in effect from now on for this process's sockets: true when inline.</returns>
    public static bool Configure() => Configure(Environment.GetEnvironmentVariable, Environment.SetEnvironmentVariable);

    /// <summary><see cref="Configure()"/> over a given environment (for tests: the real one is process-wide).</summary>
    internal static bool Configure(Func<string, string?> read, Action<string, string> write)
    {
        var current = read(InlineSocketCompletionsVariable);
        if (current is null)
        {
            write(InlineSocketCompletionsVariable, "1");
            return true;
        }

        return current == "1";
    }
}
