using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Npgsql;

namespace PgLlm.Local;

/// <summary>
/// A throwaway PostgreSQL server: a fresh cluster in a temporary directory, listening only on 127.0.0.1 on a free
/// port, with trust authentication for the <c>postgres</c> superuser. When the current process is root, the
/// server runs as the <c>postgres</c> OS user (via <c>runuser</c>, or <c>su</c> as a fallback).
/// </summary>
/// <remarks>
/// Dispose the instance to stop the server and delete its files. A process-exit handler stops the server as a
/// last resort when a test run ends without disposing it.
/// </remarks>
public sealed class LocalPostgres : IAsyncDisposable
{
    private const string SuperUser = "postgres";
    private const string MaintenanceDatabase = "postgres";
    private const int LogTailLines = 40;

    private readonly PostgresBinaries _binaries;
    private readonly LocalPostgresOptions _options;
    private readonly ProcessRunner _runner;
    private readonly string _rootDirectory;
    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private readonly ConcurrentDictionary<string, byte> _issuedConnectionStrings = new(StringComparer.Ordinal);
    private readonly EventHandler _processExitHandler;
    private int _disposed;
    private volatile bool _running;

    private LocalPostgres(PostgresBinaries binaries, LocalPostgresOptions options, ProcessRunner runner, string rootDirectory)
    {
        _binaries = binaries;
        _options = options;
        _runner = runner;
        _rootDirectory = rootDirectory;
        DataDirectory = Path.Combine(rootDirectory, "data");
        SocketDirectory = Path.Combine(rootDirectory, "sock");
        LogFilePath = Path.Combine(rootDirectory, "postgres.log");
        ConnectionString = string.Empty;
        _processExitHandler = (_, _) => EmergencyShutdown();
    }

    /// <summary>Connection string for the <c>postgres</c> database as the <c>postgres</c> superuser (pooling on).</summary>
    public string ConnectionString { get; private set; }

    /// <summary>TCP port the server listens on (on 127.0.0.1 only). Stays the same across <see cref="RestartAsync(CancellationToken)"/>.</summary>
    public int Port { get; private set; }

    /// <summary>The cluster's data directory (PGDATA), inside the temporary directory.</summary>
    public string DataDirectory { get; }

    /// <summary>Directory holding the server's Unix-domain socket.</summary>
    public string SocketDirectory { get; }

    /// <summary>Server log file (what <c>pg_ctl -l</c> writes).</summary>
    public string LogFilePath { get; }

    /// <summary>True between a successful start (or restart) and the next stop.</summary>
    public bool IsRunning => _running;

    /// <summary>Tells whether the PostgreSQL binaries (and, when running as root, a way to switch users) were found.</summary>
    /// <param name="reason">Where the binaries were found, or why the server cannot be started.</param>
    /// <returns>True when <see cref="StartAsync"/> can be expected to work with default options.</returns>
    public static bool IsAvailable(out string reason)
    {
        var binaries = PostgresBinaries.TryFind(explicitDirectory: null, out reason);
        if (binaries is null)
        {
            return false;
        }

        return CheckRootRequirements(new LocalPostgresOptions().ServiceUser, ref reason);
    }

    /// <summary>Creates a new cluster in a temporary directory and starts a server for it.</summary>
    /// <param name="options">Server options; null for the defaults.</param>
    /// <param name="cancellationToken">Cancels the start (the partially created cluster is removed).</param>
    /// <returns>The running server.</returns>
    /// <exception cref="InvalidOperationException">The binaries are missing, or initdb or the server failed.</exception>
    public static async Task<LocalPostgres> StartAsync(LocalPostgresOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new LocalPostgresOptions();
        ValidateOptions(options);
        var binaries = PostgresBinaries.TryFind(options.BinDirectory, out var reason)
            ?? throw new InvalidOperationException(reason);
        if (!CheckRootRequirements(options.ServiceUser, ref reason))
        {
            throw new InvalidOperationException(reason);
        }

        var runAsUser = ProcessIdentity.IsRoot ? options.ServiceUser : null;
        var rootDirectory = CreateRootDirectory(runAsUser is not null);
        var runner = new ProcessRunner(runAsUser, rootDirectory, new Dictionary<string, string>
        {
            ["LC_ALL"] = "C",
            ["LANG"] = "C",
            ["TZ"] = options.TimeZone,
        });

        var server = new LocalPostgres(binaries, options, runner, rootDirectory);
        try
        {
            Directory.CreateDirectory(server.SocketDirectory);
            if (runAsUser is not null)
            {
                await server.ChangeOwnerAsync(runAsUser, cancellationToken).ConfigureAwait(false);
            }

            if (options.StopWhenProcessDies && !OperatingSystem.IsWindows())
            {
                await server.StartWatchdogAsync(cancellationToken).ConfigureAwait(false);
            }

            await server.InitDbAsync(cancellationToken).ConfigureAwait(false);
            await server.WriteConfigurationAsync(cancellationToken).ConfigureAwait(false);
            AppDomain.CurrentDomain.ProcessExit += server._processExitHandler;
            await server.StartOnFreePortAsync(cancellationToken).ConfigureAwait(false);
            return server;
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Returns a connection string for <paramref name="database"/> on this server (superuser, pooling on).</summary>
    /// <param name="database">Database name.</param>
    /// <returns>The connection string.</returns>
    public string GetConnectionString(string database)
    {
        ArgumentException.ThrowIfNullOrEmpty(database);
        var connectionString = new NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = Port,
            Username = SuperUser,
            Database = database,
            Pooling = true,
        }.ConnectionString;
        _issuedConnectionStrings.TryAdd(connectionString, 0);
        return connectionString;
    }

    /// <summary>Creates a fresh, empty database and returns its connection string.</summary>
    /// <param name="name">Database name; null for a random <c>db_…</c> name.</param>
    /// <param name="cancellationToken">Cancels the operation.</param>
    /// <returns>Connection string for the new database.</returns>
    public async Task<string> CreateDatabaseAsync(string? name = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        name ??= "db_" + Guid.NewGuid().ToString("N")[..16];
        ArgumentException.ThrowIfNullOrWhiteSpace(name);

        var connection = new NpgsqlConnection(ConnectionString);
        await using (connection.ConfigureAwait(false))
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            var command = new NpgsqlCommand("CREATE DATABASE " + QuoteIdentifier(name), connection);
            await using (command.ConfigureAwait(false))
            {
                await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        return GetConnectionString(name);
    }

    /// <summary>Stops the server (<c>pg_ctl stop -m fast</c>) and keeps the data directory for <see cref="RestartAsync(CancellationToken)"/>.</summary>
    /// <param name="cancellationToken">Cancels waiting for the stop.</param>
    /// <returns>A task that completes when the server has stopped.</returns>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        await _lifecycle.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!_running)
            {
                return;
            }

            var result = await PgCtlStopAsync("fast", _options.CommandTimeout, cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw Failure("pg_ctl stop failed", result);
            }

            _running = false;
            ClearPools();
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Starts the server again on the same port and data directory after <see cref="StopAsync"/>.</summary>
    /// <param name="cancellationToken">Cancels waiting for the start.</param>
    /// <returns>A task that completes when the server accepts connections.</returns>
    /// <remarks>Calling it while the server runs stops it first (a real restart, <c>pg_ctl stop -m fast</c>).</remarks>
    public Task RestartAsync(CancellationToken cancellationToken = default) => RestartAsync(immediate: false, cancellationToken);

    /// <summary>
    /// Restarts the server on the same port and data directory: a running server is stopped first with
    /// <c>pg_ctl stop -m immediate</c> when <paramref name="immediate"/> (as a crash: no checkpoint, crash
    /// recovery at the start, asynchronously committed transactions of the last moments may be lost), else
    /// with <c>-m fast</c> (clients disconnected, a shutdown checkpoint).
    /// </summary>
    /// <param name="immediate">Stop as a crash would, rather than cleanly.</param>
    /// <param name="cancellationToken">Cancels waiting for the stop and the start.</param>
    /// <returns>A task that completes when the server accepts connections again.</returns>
    public async Task RestartAsync(bool immediate, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        await _lifecycle.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_running)
            {
                var stop = await PgCtlStopAsync(immediate ? "immediate" : "fast", _options.CommandTimeout, cancellationToken).ConfigureAwait(false);
                if (!stop.Succeeded)
                {
                    throw Failure("pg_ctl stop failed", stop);
                }

                _running = false;
                ClearPools();
            }

            var logOffset = LogLength();
            var start = await PgCtlStartAsync(Port, cancellationToken).ConfigureAwait(false);
            if (!start.Succeeded)
            {
                await TryStopImmediateAsync().ConfigureAwait(false);
                throw Failure($"pg_ctl start (restart on port {Port}) failed", start, logOffset);
            }

            _running = true;
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Stops the server (<c>-m immediate</c>) and deletes the temporary directory. Never throws.</summary>
    /// <returns>A task that completes when the server is gone.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        AppDomain.CurrentDomain.ProcessExit -= _processExitHandler;
        var locked = false;
        try
        {
            locked = await _lifecycle.WaitAsync(_options.CommandTimeout).ConfigureAwait(false);
            ClearPools();
            await TryStopImmediateAsync().ConfigureAwait(false);
            _running = false;
            await DeleteRootDirectoryAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Dispose must never throw.
        catch (Exception)
#pragma warning restore CA1031
        {
            // Best effort.
        }
        finally
        {
            if (locked)
            {
                _lifecycle.Release();
            }
        }
    }

    private static void ValidateOptions(LocalPostgresOptions options)
    {
        foreach (var name in options.Settings.Keys)
        {
            if (string.IsNullOrEmpty(name) || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '.'))
            {
                throw new ArgumentException($"Invalid PostgreSQL setting name '{name}' in Settings.", nameof(options));
            }
        }

        if (options.MaxConnections < 1)
        {
            throw new ArgumentException("MaxConnections must be positive.", nameof(options));
        }

        if (options.CommandTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("CommandTimeout must be positive.", nameof(options));
        }
    }

    private static bool CheckRootRequirements(string serviceUser, ref string reason)
    {
        if (!ProcessIdentity.IsRoot)
        {
            return true;
        }

        if (ProcessRunner.FindUserSwitcher() is null)
        {
            reason = $"running as root, but neither 'runuser' nor 'su' is available to run PostgreSQL as '{serviceUser}' ({reason})";
            return false;
        }

        if (!ProcessIdentity.UserExists(serviceUser))
        {
            reason = $"running as root, but the OS user '{serviceUser}' that should run PostgreSQL does not exist ({reason})";
            return false;
        }

        reason += $"; running as root, so PostgreSQL runs as OS user '{serviceUser}'";
        return true;
    }

    private static string CreateRootDirectory(bool forOtherUser)
    {
        // As root, the service user must be able to traverse the parent: use /tmp (mode 1777), not a private TMPDIR.
        var parent = forOtherUser && Directory.Exists("/tmp") ? "/tmp" : Path.GetTempPath();
        var path = Path.Combine(parent, "pgllm-pg-" + Guid.NewGuid().ToString("N")[..12]);
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
        }
        else
        {
            const UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupExecute
                | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
            Directory.CreateDirectory(path, mode);
        }

        return path;
    }

    private async Task ChangeOwnerAsync(string user, CancellationToken cancellationToken)
    {
        var chown = new ProcessRunner(runAsUser: null, _rootDirectory, new Dictionary<string, string>());
        var result = await chown.RunAsync("chown", ["-R", user + ":", _rootDirectory], _options.CommandTimeout, cancellationToken)
            .ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"Could not hand '{_rootDirectory}' to OS user '{user}' ({result.CommandLine}, exit code {result.ExitCode}).\n{result.Output}");
        }
    }

    /// <summary>
    /// Starts a detached shell loop that waits for this process to die (or the directory to vanish), then stops the
    /// server and removes the directory. Signals a test runner sends to its process group are ignored, and the loop is
    /// double-forked (and put in its own session when <c>setsid</c> exists) so killing our process tree spares it.
    /// </summary>
    private async Task StartWatchdogAsync(CancellationToken cancellationToken)
    {
        var root = ProcessRunner.ShellQuote(_rootDirectory);
        var pidFile = ProcessRunner.ShellQuote(Path.Combine(DataDirectory, "postmaster.pid"));
        var stop = _runner.ToShellCommand(_binaries.PgCtl, StopArguments("immediate", TimeSpan.FromSeconds(30)));
        var parent = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        var script =
            "trap '' INT HUP TERM; "
            + $"while kill -0 {parent} 2>/dev/null && [ -d {root} ]; do sleep 1; done; "
            + $"if [ -d {root} ]; then if [ -f {pidFile} ]; then {stop}; fi; rm -rf {root}; fi";
        var setsid = File.Exists("/usr/bin/setsid") ? "/usr/bin/setsid " : File.Exists("/bin/setsid") ? "/bin/setsid " : string.Empty;
        var launcher = $"{setsid}/bin/sh -c {ProcessRunner.ShellQuote(script)} </dev/null >/dev/null 2>&1 &";

        var direct = new ProcessRunner(runAsUser: null, _rootDirectory, new Dictionary<string, string>());
        var result = await direct.RunAsync("/bin/sh", ["-c", launcher], TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"Could not start the cleanup watchdog ({result.CommandLine}, exit code {result.ExitCode}).\n{result.Output}");
        }
    }

    private async Task InitDbAsync(CancellationToken cancellationToken)
    {
        string[] arguments =
        [
            "-D", DataDirectory,
            "-U", SuperUser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            // The cluster is thrown away: skip initdb's final fsync of the new files (the server keeps fsync on).
            "--no-sync",
            "--no-instructions",
        ];
        var result = await _runner.RunAsync(_binaries.InitDb, arguments, _options.CommandTimeout, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"initdb failed ({result.CommandLine}, exit code {result.ExitCode}).\n{result.Output}");
        }
    }

    private async Task WriteConfigurationAsync(CancellationToken cancellationToken)
    {
        var settings = new List<KeyValuePair<string, string>>
        {
            new("listen_addresses", "127.0.0.1"),
            new("unix_socket_directories", SocketDirectory),
            new("max_connections", _options.MaxConnections.ToString(CultureInfo.InvariantCulture)),
            new("timezone", _options.TimeZone),
            new("log_timezone", _options.TimeZone),
        };
        if (_options.FastButUnsafe)
        {
            settings.Add(new("fsync", "off"));
        }

        var preload = _options.SharedPreloadLibraries;
        if (!string.IsNullOrWhiteSpace(_options.CronDatabase))
        {
            preload = string.IsNullOrWhiteSpace(preload) ? "pg_cron" : preload + ",pg_cron";
            settings.Add(new("cron.database_name", _options.CronDatabase));
            // pg_cron runs jobs over libpq; the socket needs no TCP setup and trust covers it.
            settings.Add(new("cron.host", SocketDirectory));
        }

        if (!string.IsNullOrWhiteSpace(preload))
        {
            settings.Add(new("shared_preload_libraries", preload));
        }

        settings.AddRange(_options.Settings);

        var text = new StringBuilder("\n# Added by PgLlm.Local (later lines win)\n");
        foreach (var (name, value) in settings)
        {
            text.Append(name).Append(" = '").Append(value.Replace("'", "''", StringComparison.Ordinal)).Append("'\n");
        }

        // Appending keeps the file's owner (the service user when running as root).
        await File.AppendAllTextAsync(Path.Combine(DataDirectory, "postgresql.conf"), text.ToString(), cancellationToken)
            .ConfigureAwait(false);
    }

    private async Task StartOnFreePortAsync(CancellationToken cancellationToken)
    {
        var attempts = Math.Max(1, _options.PortAttempts);
        for (var attempt = 1; ; attempt++)
        {
            var port = FindFreePort();
            var logOffset = LogLength();
            var result = await PgCtlStartAsync(port, cancellationToken).ConfigureAwait(false);
            if (result.Succeeded)
            {
                Port = port;
                ConnectionString = GetConnectionString(MaintenanceDatabase);
                _running = true;
                return;
            }

            var log = ReadLog(logOffset);
            var portTaken = log.Contains("could not bind", StringComparison.OrdinalIgnoreCase)
                || log.Contains("could not create any TCP/IP sockets", StringComparison.OrdinalIgnoreCase)
                || log.Contains("already in use", StringComparison.OrdinalIgnoreCase);
            await TryStopImmediateAsync().ConfigureAwait(false);
            if (!portTaken || attempt >= attempts)
            {
                throw Failure($"pg_ctl start on port {port} failed (attempt {attempt} of {attempts})", result, logOffset);
            }
        }
    }

    private Task<ProcessResult> PgCtlStartAsync(int port, CancellationToken cancellationToken)
    {
        var timeoutSeconds = Math.Max(1, (int)Math.Ceiling(_options.CommandTimeout.TotalSeconds));
        string[] arguments =
        [
            "start",
            "-w",
            "-t", timeoutSeconds.ToString(CultureInfo.InvariantCulture),
            "-D", DataDirectory,
            "-l", LogFilePath,
            "-o", "-p " + port.ToString(CultureInfo.InvariantCulture),
        ];
        return _runner.RunAsync(_binaries.PgCtl, arguments, _options.CommandTimeout + TimeSpan.FromSeconds(10), cancellationToken);
    }

    private Task<ProcessResult> PgCtlStopAsync(string mode, TimeSpan timeout, CancellationToken cancellationToken)
        => _runner.RunAsync(_binaries.PgCtl, StopArguments(mode, timeout), timeout + TimeSpan.FromSeconds(10), cancellationToken);

    private string[] StopArguments(string mode, TimeSpan timeout)
        =>
        [
            "stop",
            "-w",
            "-t", Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture),
            "-D", DataDirectory,
            "-m", mode,
        ];

    /// <summary>Stops a running (or half-started) server; falls back to killing the postmaster. Never throws.</summary>
    private async Task TryStopImmediateAsync()
    {
        if (!File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
        {
            return;
        }

        try
        {
            var result = await PgCtlStopAsync("immediate", TimeSpan.FromSeconds(30), CancellationToken.None).ConfigureAwait(false);
            if (result.Succeeded)
            {
                return;
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or IOException)
        {
            // Fall through to the kill below.
        }

        KillPostmaster();
    }

    private void EmergencyShutdown()
    {
        try
        {
            if (File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
            {
                var result = _runner.RunBlocking(_binaries.PgCtl, StopArguments("immediate", TimeSpan.FromSeconds(10)), TimeSpan.FromSeconds(15));
                if (result is not { Succeeded: true })
                {
                    KillPostmaster();
                }
            }

            Directory.Delete(_rootDirectory, recursive: true);
        }
#pragma warning disable CA1031 // Process-exit handlers must never throw.
        catch (Exception)
#pragma warning restore CA1031
        {
            // Best effort.
        }
    }

    private void KillPostmaster()
    {
        try
        {
            var pidFile = Path.Combine(DataDirectory, "postmaster.pid");
            var firstLine = File.Exists(pidFile) ? File.ReadLines(pidFile).FirstOrDefault() : null;
            if (int.TryParse(firstLine, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) && pid > 0)
            {
                using var process = System.Diagnostics.Process.GetProcessById(pid);
                process.Kill(entireProcessTree: true);
                process.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException
            or UnauthorizedAccessException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            // Already gone or not ours to kill.
        }
    }

    private async Task DeleteRootDirectoryAsync()
    {
        for (var attempt = 0; attempt < 5; attempt++)
        {
            try
            {
                if (Directory.Exists(_rootDirectory))
                {
                    Directory.Delete(_rootDirectory, recursive: true);
                }

                return;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100 * (attempt + 1))).ConfigureAwait(false);
            }
        }
    }

    private void ClearPools()
    {
        foreach (var connectionString in _issuedConnectionStrings.Keys)
        {
            using var connection = new NpgsqlConnection(connectionString);
            NpgsqlConnection.ClearPool(connection);
        }
    }

    private static int FindFreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        finally
        {
            listener.Stop();
        }
    }

    private static string QuoteIdentifier(string identifier)
        => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private long LogLength()
    {
        try
        {
            return File.Exists(LogFilePath) ? new FileInfo(LogFilePath).Length : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private string ReadLog(long offset)
    {
        try
        {
            if (!File.Exists(LogFilePath))
            {
                return string.Empty;
            }

            using var stream = new FileStream(LogFilePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            stream.Seek(Math.Min(offset, stream.Length), SeekOrigin.Begin);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            return reader.ReadToEnd();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"(could not read {LogFilePath}: {ex.Message})";
        }
    }

    private InvalidOperationException Failure(string what, ProcessResult result, long logOffset = 0)
    {
        var lines = ReadLog(logOffset).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var tail = lines.Length == 0 ? "(empty)" : string.Join('\n', lines.TakeLast(LogTailLines));
        return new InvalidOperationException(
            $"{what}: {result.CommandLine} exited with code {result.ExitCode}.\n{result.Output}\nServer log tail ({LogFilePath}):\n{tail}");
    }
}
