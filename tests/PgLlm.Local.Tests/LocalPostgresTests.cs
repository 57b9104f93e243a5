using System.Diagnostics;
using System.Net.Sockets;
using Npgsql;

namespace PgLlm.Local.Tests;

public sealed class LocalPostgresTests : IClassFixture<PostgresFixture>
{
    private readonly PostgresFixture _fixture;
    private readonly ITestOutputHelper _output;

    public LocalPostgresTests(PostgresFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    private LocalPostgres Server => _fixture.Server;

    [Fact]
    public void BinariesAreAvailable()
    {
        Assert.True(LocalPostgres.IsAvailable(out var reason), reason);
        _output.WriteLine(reason);
    }

    [Fact]
    public async Task StartsAndAnswersSelectVersion()
    {
        _output.WriteLine($"fixture startup (initdb + start): {_fixture.StartupTime.TotalMilliseconds:0} ms");
        Assert.True(Server.IsRunning);
        Assert.InRange(Server.Port, 1, 65535);
        Assert.True(Directory.Exists(Server.DataDirectory));

        var builder = new NpgsqlConnectionStringBuilder(Server.ConnectionString);
        Assert.Equal("127.0.0.1", builder.Host);
        Assert.Equal(Server.Port, builder.Port);
        Assert.Equal("postgres", builder.Username);
        Assert.Equal("postgres", builder.Database);
        Assert.True(builder.Pooling);
        Assert.Contains("Pooling=", Server.ConnectionString, StringComparison.OrdinalIgnoreCase);

        await using var connection = new NpgsqlConnection(Server.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT version(), current_setting('max_connections'), current_setting('listen_addresses'), current_setting('fsync'), current_setting('TimeZone'), current_setting('server_encoding')", connection);
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        _output.WriteLine(reader.GetString(0));
        Assert.StartsWith("PostgreSQL", reader.GetString(0), StringComparison.Ordinal);
        Assert.Equal("200", reader.GetString(1));
        Assert.Equal("127.0.0.1", reader.GetString(2));
        Assert.Equal("on", reader.GetString(3));
        Assert.Equal("UTC", reader.GetString(4));
        Assert.Equal("UTF8", reader.GetString(5));
    }

    [Fact]
    public async Task CreatedDatabaseWorks()
    {
        var stopwatch = Stopwatch.StartNew();
        var connectionString = await Server.CreateDatabaseAsync();
        _output.WriteLine($"CREATE DATABASE took {stopwatch.ElapsedMilliseconds} ms");
        var database = new NpgsqlConnectionStringBuilder(connectionString).Database;
        Assert.StartsWith("db_", database, StringComparison.Ordinal);

        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        Assert.Equal(database, await ScalarAsync<string>(connection, "SELECT current_database()"));
        await ExecuteAsync(connection, "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL); INSERT INTO item VALUES (1, 'héllo');");
        Assert.Equal("héllo", await ScalarAsync<string>(connection, "SELECT name FROM item WHERE id = 1"));

        var named = await Server.CreateDatabaseAsync("Named Db");
        await using var namedConnection = new NpgsqlConnection(named);
        await namedConnection.OpenAsync();
        Assert.Equal("Named Db", await ScalarAsync<string>(namedConnection, "SELECT current_database()"));
    }

    [Fact]
    public async Task StopAndRestartKeepData()
    {
        var connectionString = await Server.CreateDatabaseAsync();
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, "CREATE TABLE kept (value text); INSERT INTO kept VALUES ('survives restart');");
        }

        var port = Server.Port;
        var stopwatch = Stopwatch.StartNew();
        await Server.StopAsync();
        _output.WriteLine($"stop took {stopwatch.ElapsedMilliseconds} ms");
        Assert.False(Server.IsRunning);
        Assert.False(await AcceptsTcpAsync(port));
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync();
        });

        stopwatch.Restart();
        await Server.RestartAsync();
        _output.WriteLine($"restart took {stopwatch.ElapsedMilliseconds} ms");
        Assert.True(Server.IsRunning);
        Assert.Equal(port, Server.Port);

        await using (var connection = new NpgsqlConnection(connectionString))
        {
            await connection.OpenAsync();
            Assert.Equal("survives restart", await ScalarAsync<string>(connection, "SELECT value FROM kept"));
        }

        // RestartAsync on a running server is a real restart.
        await Server.RestartAsync();
        await using (var connection = new NpgsqlConnection(connectionString))
        {
            await connection.OpenAsync();
            Assert.Equal("survives restart", await ScalarAsync<string>(connection, "SELECT value FROM kept"));
        }
    }

    [Fact]
    public async Task DisposeRemovesDataDirectoryAndStopsListening()
    {
        var stopwatch = Stopwatch.StartNew();
        var server = await LocalPostgres.StartAsync(new LocalPostgresOptions { FastButUnsafe = true });
        _output.WriteLine($"start (initdb + pg_ctl start) took {stopwatch.ElapsedMilliseconds} ms");
        var port = server.Port;
        var dataDirectory = server.DataDirectory;
        try
        {
            await using var connection = new NpgsqlConnection(server.ConnectionString);
            await connection.OpenAsync();
            Assert.Equal("off", await ScalarAsync<string>(connection, "SELECT current_setting('fsync')"));
            Assert.True(await AcceptsTcpAsync(port));
        }
        finally
        {
            stopwatch.Restart();
            await server.DisposeAsync();
            _output.WriteLine($"dispose took {stopwatch.ElapsedMilliseconds} ms");
        }

        Assert.False(Directory.Exists(dataDirectory));
        Assert.False(Directory.Exists(Path.GetDirectoryName(dataDirectory)));
        Assert.False(await AcceptsTcpAsync(port));

        await server.DisposeAsync(); // idempotent, never throws
        await Assert.ThrowsAsync<ObjectDisposedException>(() => server.CreateDatabaseAsync());
    }

    [Fact]
    public async Task SettingsAreApplied()
    {
        var options = new LocalPostgresOptions { Settings = { ["application_name"] = "it's configured", ["work_mem"] = "8MB" } };
        await using var server = await LocalPostgres.StartAsync(options);
        await using var connection = new NpgsqlConnection(server.ConnectionString);
        await connection.OpenAsync();
        Assert.Equal("8MB", await ScalarAsync<string>(connection, "SELECT current_setting('work_mem')"));
    }

    [Fact]
    public async Task MissingBinariesGiveAClearError()
    {
        var options = new LocalPostgresOptions { BinDirectory = "/nonexistent/pg/bin" };
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => LocalPostgres.StartAsync(options));
        Assert.Contains("/nonexistent/pg/bin", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task InvalidSettingFailsWithServerLog()
    {
        var options = new LocalPostgresOptions { Settings = { ["no_such_setting_xyz"] = "1" } };
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => LocalPostgres.StartAsync(options));
        _output.WriteLine(error.Message);
        Assert.Contains("no_such_setting_xyz", error.Message, StringComparison.Ordinal);
    }

    private static async Task<bool> AcceptsTcpAsync(int port)
    {
        using var client = new TcpClient();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await client.ConnectAsync("127.0.0.1", port, timeout.Token);
            return true;
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            return false;
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
