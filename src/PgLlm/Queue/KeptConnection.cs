using System.Data;
using Npgsql;

namespace PgLlm.Queue;

/// <summary>
/// A connection the worker keeps across calls instead of returning it to the pool: a pooled connection is
/// reset (<c>DISCARD ALL</c>) each time it returns, which drops every plan the session cached. Opened when
/// first needed, and again when it is no longer open (a failure or a server restart broke it). One user at a time.
/// </summary>
/// <param name="dataSource">Where connections come from.</param>
/// <param name="sessionSetup">A statement run on each connection once opened (a session setting), or null.</param>
internal sealed class KeptConnection(NpgsqlDataSource dataSource, string? sessionSetup = null) : IDisposable
{
    private NpgsqlConnection? _connection;

    /// <summary>The open connection, opening a new one if there is none or the last one broke.</summary>
    public async ValueTask<NpgsqlConnection> GetAsync(CancellationToken cancellationToken)
    {
        if (_connection is { State: not ConnectionState.Open })
        {
            await CloseAsync().ConfigureAwait(false);
        }

        if (_connection is null)
        {
            var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
            if (sessionSetup is not null)
            {
                await using var command = new NpgsqlCommand(sessionSetup, connection);
                await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }

            _connection = connection;
        }

        return _connection;
    }

    /// <summary>
    /// After a failed statement: keeps the connection for a statement's own error (it stays open); closes it
    /// for anything else, including a server shutting down (also reported as a <see cref="PostgresException"/>).
    /// </summary>
    public ValueTask CloseIfBrokenAsync(Exception exception) =>
        exception is PostgresException && _connection is { State: ConnectionState.Open } ? ValueTask.CompletedTask : CloseAsync();

    /// <summary>Closes the connection, quietly if it is already broken; the next <see cref="GetAsync"/> opens another.</summary>
    public async ValueTask CloseAsync()
    {
        var connection = _connection;
        _connection = null;
        if (connection is not null)
        {
            try
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is NpgsqlException or IOException or TimeoutException)
            {
                // Already broken: nothing to close.
            }
        }
    }

    public void Dispose() => _connection?.Dispose();
}
