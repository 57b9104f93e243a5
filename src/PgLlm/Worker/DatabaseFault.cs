using System.Net.Sockets;
using Npgsql;

namespace PgLlm.Worker;

/// <summary>
/// Tells a lost or refused connection (a server restarting, a network fault) from a statement's own error.
/// A fault is retried on a new connection after a backoff; a statement's own error is the job's outcome.
/// </summary>
internal static class DatabaseFault
{
    /// <summary>
    /// True for errors of the connection rather than of the statement: I/O and timeouts, a command on a
    /// connection that broke (Npgsql's "Connection is not open"), and the server's own connection-class
    /// errors: 08 (connection exception), 57 (shutting down, starting up) and 53 (out of resources). A cancelled
    /// statement (57014: a cancel request or a statement timeout) is the statement's own error: its connection stays open.
    /// </summary>
    public static bool IsConnectionFault(Exception exception) => exception switch
    {
        PostgresException postgres => postgres.SqlState.StartsWith("08", StringComparison.Ordinal)
            || (postgres.SqlState.StartsWith("57", StringComparison.Ordinal) && postgres.SqlState != PostgresErrorCodes.QueryCanceled)
            || postgres.SqlState.StartsWith("53", StringComparison.Ordinal),
        NpgsqlException or TimeoutException or IOException or SocketException or ObjectDisposedException => true,
        InvalidOperationException => exception.Source == "Npgsql",
        _ => false,
    };
}
