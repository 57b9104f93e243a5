using System.CommandLine;
using System.CommandLine.Invocation;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Configuration;
using Npgsql;
using PgLlm.Hosting;
using PgLlm.Migrations;
using Spectre.Console;

namespace PgLlm.Cli;

/// <summary>
/// The <c>pgllm</c> commands: <c>migrate</c>, <c>worker</c>, <c>status</c>, <c>retry</c>, <c>endpoint</c>, <c>budget</c>, <c>backfill</c>,
/// <c>plan</c>, <c>compare</c>, <c>rerun</c>, <c>script</c> and <c>dev</c>. The dotnet tool runs them with scripts loaded from <c>--assembly</c>; a host
/// application can run them in-process with its own scripts (<c>PgLlmCommandLine.RunAsync(args, PgLlmScripts.All)</c>).
/// Settings come from <c>appsettings.json</c> in the current folder, the environment (<c>PGLLM_*</c>,
/// <c>PgLlm__...</c>) and <c>--connection</c>.
/// </summary>
/// <remarks>
/// Exit codes: <see cref="ExitOk"/> 0, <see cref="ExitError"/> 1 (one line on the error writer),
/// <see cref="ExitUsage"/> 2 (a bad command line), <see cref="ExitJobsFailed"/> 3 (<c>worker --until-idle</c>:
/// a job of the run ended failed), <see cref="ExitInterrupted"/> 130 (Ctrl+C, SIGINT). SIGTERM stops a command the
/// same way; the commands that run until stopped (<c>worker</c>, <c>dev</c>, <c>status --watch</c>) then exit 0, as a
/// service manager expects of a clean stop.
/// </remarks>
public sealed partial class PgLlmCommandLine
{
    /// <summary>The command did what it was asked.</summary>
    public const int ExitOk = 0;

    /// <summary>An error the user can fix (settings, database, endpoint): one line on standard error.</summary>
    public const int ExitError = 1;

    /// <summary>The command line itself is wrong (unknown command or option, a missing or bad value).</summary>
    public const int ExitUsage = 2;

    /// <summary><c>worker --until-idle</c> drained the queue, but at least one job of the run ended failed (a dead letter).</summary>
    public const int ExitJobsFailed = 3;

    /// <summary>Stopped by Ctrl+C (SIGINT), or a command that does not run until stopped ended by SIGTERM.</summary>
    public const int ExitInterrupted = 130;

    private readonly IAnsiConsole _console;
    private readonly TextWriter _error;
    private readonly IReadOnlyList<PgLlmScript>? _scripts;
    private readonly IConfiguration _configuration;
    private volatile bool _terminated;

    private readonly Option<string?> _connection = new("--connection", "-c")
    {
        Description = "The PostgreSQL connection string (default: PGLLM_CONNECTION, or PgLlm:ConnectionString in appsettings.json).",
        Recursive = true,
    };

    private readonly Option<FileInfo[]> _assembly = new("--assembly", "-a")
    {
        Description = "The compiled application (.dll) whose [LlmTable] types PgLlm generated scripts for; repeatable.",
    };

    /// <summary>Creates the commands.</summary>
    /// <param name="scripts">The migration scripts of the host application; when null, <c>migrate</c> and <c>script</c> need <c>--assembly</c>.</param>
    /// <param name="console">Where output goes; the terminal when null.</param>
    /// <param name="configuration">Settings; <c>appsettings.json</c> in the current folder and the environment when null.</param>
    /// <param name="error">
    /// Where errors go, one line each: standard error when null and <paramref name="console"/> is null, else the
    /// console's own writer (so an embedding application that passes a console sees everything there).
    /// </param>
    public PgLlmCommandLine(IEnumerable<PgLlmScript>? scripts = null, IAnsiConsole? console = null, IConfiguration? configuration = null, TextWriter? error = null)
    {
        _console = console ?? AnsiConsole.Console;
        _error = error ?? (console is null ? Console.Error : console.Profile.Out.Writer);
        _scripts = scripts?.ToList();
        _configuration = configuration ?? new ConfigurationBuilder()
            .SetBasePath(Directory.GetCurrentDirectory())
            .AddJsonFile("appsettings.json", optional: true)
            .AddEnvironmentVariables()
            .Build();

        RootCommand = new RootCommand("pgllm: run LLM tasks on PostgreSQL rows. Migrate the schema, run the worker, watch the queue, re-drive failures, backfill rows.");
        RootCommand.Options.Add(_connection);
        RootCommand.Subcommands.Add(CreateMigrateCommand());
        RootCommand.Subcommands.Add(CreateWorkerCommand());
        RootCommand.Subcommands.Add(CreateStatusCommand());
        RootCommand.Subcommands.Add(CreateRetryCommand());
        RootCommand.Subcommands.Add(CreateEndpointCommand());
        RootCommand.Subcommands.Add(CreateBudgetCommand());
        RootCommand.Subcommands.Add(CreateBatchCommand());
        RootCommand.Subcommands.Add(CreateBackfillCommand());
        RootCommand.Subcommands.Add(CreatePlanCommand());
        RootCommand.Subcommands.Add(CreateCompareCommand());
        RootCommand.Subcommands.Add(CreateRerunCommand());
        RootCommand.Subcommands.Add(CreateScriptCommand());
        RootCommand.Subcommands.Add(CreateDevCommand());
        RootCommand.Subcommands.Add(CreateConsoleCommand());
    }

    /// <summary>The command tree, to add commands or invoke it with custom settings.</summary>
    public RootCommand RootCommand { get; }

    /// <summary>
    /// Parses <paramref name="args"/> and runs the command; returns the exit code (<see cref="ExitOk"/>,
    /// <see cref="ExitError"/>, <see cref="ExitUsage"/>, <see cref="ExitJobsFailed"/>, <see cref="ExitInterrupted"/>).
    /// Ctrl+C, SIGINT and SIGTERM cancel the command, as does <paramref name="cancellationToken"/>.
    /// </summary>
    public async Task<int> InvokeAsync(IReadOnlyList<string> args, CancellationToken cancellationToken = default)
    {
        var parseResult = RootCommand.Parse(args);
        if (parseResult.Action is ParseErrorAction)
        {
            foreach (var error in parseResult.Errors)
            {
                WriteError(error.Message);
            }

            // "pgllm" for the tool; the application's name when it runs the commands itself.
            var root = RootCommand.HelpName ?? RootCommand.Name;
            var command = parseResult.CommandResult.Command is RootCommand ? root : root + " " + parseResult.CommandResult.Command.Name;
            _error.WriteLine($"Run '{command} --help' for usage.");
            _error.Flush();
            return ExitUsage;
        }

        // Ctrl+C (SIGINT) and SIGTERM cancel the command's token; which one came decides the exit code of a
        // command that runs until stopped (a service manager's SIGTERM to a worker is a clean stop). A second
        // signal is left to its default action: the process ends at once.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var interrupt = OnSignal(PosixSignal.SIGINT, stop);
        using var terminate = OnSignal(PosixSignal.SIGTERM, stop);
        var configuration = new InvocationConfiguration
        {
            Output = _console.Profile.Out.Writer,
            Error = _error,
            ProcessTerminationTimeout = null,
        };
        return await parseResult.InvokeAsync(configuration, stop.Token).ConfigureAwait(false);
    }

    /// <summary>Runs <c>pgllm</c> with <paramref name="args"/> on the terminal; <paramref name="scripts"/> are the host application's migration scripts.</summary>
    public static Task<int> RunAsync(string[] args, IEnumerable<PgLlmScript>? scripts = null, CancellationToken cancellationToken = default) =>
        new PgLlmCommandLine(scripts).InvokeAsync(args, cancellationToken);

    /// <summary>Sets a command's action; errors a user can fix become one line and exit code 1.</summary>
    private void SetAction(Command command, Func<ParseResult, CancellationToken, Task<int>> action)
    {
        command.SetAction(async (parseResult, cancellationToken) =>
        {
            try
            {
                return await action(parseResult, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Stopped before the command finished (also while a host was still starting): 130 after Ctrl+C,
                // 0 after SIGTERM, as for a command stopped while it ran.
                _error.WriteLine(_terminated ? "Stopped." : "Interrupted.");
                _error.Flush();
                return StoppedExitCode(cancellationToken);
            }
            catch (PgLlmMigrationException ex) when (ex.Problems.Count > 0)
            {
                // The table check: one line per problem, each with the DDL that fixes it.
                foreach (var problem in ex.Problems)
                {
                    WriteError(problem);
                }

                return ExitError;
            }
            catch (Exception ex) when (CommandLineException.Describe(ex, parseResult.GetValue(_connection) ?? ReadOptions(null).ConnectionString) is { } message)
            {
                WriteError(message);
                return ExitError;
            }
        });
    }

    /// <summary>The exit code of a command that runs until stopped: 0 when it ended by itself or by SIGTERM, 130 after Ctrl+C.</summary>
    private int StoppedExitCode(CancellationToken cancellationToken) =>
        cancellationToken.IsCancellationRequested && !_terminated ? ExitInterrupted : ExitOk;

    private PosixSignalRegistration? OnSignal(PosixSignal signal, CancellationTokenSource stop)
    {
        try
        {
            return PosixSignalRegistration.Create(signal, context =>
            {
                if (stop.IsCancellationRequested)
                {
                    return;
                }

                context.Cancel = true;
                _terminated = context.Signal == PosixSignal.SIGTERM;
                stop.Cancel();
            });
        }
        catch (PlatformNotSupportedException)
        {
            return null;
        }
    }

    /// <summary>Writes <c>error: message</c> as one line on the error writer, whatever the terminal's width.</summary>
    private void WriteError(string message)
    {
        var line = string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        _error.WriteLine("error: " + line);
        _error.Flush();
    }

    /// <summary>Whether the output goes to a terminal (tables, colours, live progress) rather than a pipe or a file (plain lines).</summary>
    private bool IsTerminal => _console.Profile.Out.IsTerminal;

    /// <summary>Writes one line as is: no markup, no wrapping at the console's width (pipes, files, connection strings).</summary>
    private void WriteRaw(string line)
    {
        var writer = _console.Profile.Out.Writer;
        writer.WriteLine(line);
        writer.Flush();
    }

    /// <summary>The settings: configuration, then the <c>PGLLM_*</c> variables, then <c>--connection</c>.</summary>
    private PgLlmOptions ReadOptions(ParseResult? parseResult)
    {
        var options = new PgLlmOptions();
        PgLlmServiceCollectionExtensions.Bind(_configuration, options);
        if (parseResult?.GetValue(_connection) is { Length: > 0 } connection)
        {
            options.ConnectionString = PgLlmConnectionString.TryToNpgsql(connection);
        }

        return options;
    }

    private static NpgsqlDataSource OpenDataSource(PgLlmOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            throw new CommandLineException("no connection string: pass --connection, or set PGLLM_CONNECTION or PgLlm:ConnectionString in appsettings.json.");
        }

        try
        {
            var connectionString = PgLlmConnectionString.IsUrl(options.ConnectionString)
                ? PgLlmConnectionString.ToNpgsql(options.ConnectionString)
                : options.ConnectionString;
            return new NpgsqlDataSourceBuilder(connectionString).Build();
        }
        catch (PgLlmConfigurationException ex)
        {
            throw new CommandLineException(ex.Message, ex);
        }
        catch (ArgumentException ex)
        {
            throw new CommandLineException("the connection string is not valid: " + ex.Message, ex);
        }
    }

    /// <summary>The scripts from <c>--assembly</c>, else the host application's.</summary>
    private IReadOnlyList<PgLlmScript> Scripts(ParseResult parseResult)
    {
        var assemblies = parseResult.GetValue(_assembly) ?? [];
        if (assemblies.Length > 0)
        {
            return assemblies.SelectMany(a => ScriptAssembly.Load(a.FullName)).ToList();
        }

        return _scripts ?? throw new CommandLineException(
            "no scripts: pass --assembly path/to/YourApp.dll (the compiled application that declares the [LlmTable] types).");
    }

    /// <summary>The registered task names; fails clearly when the schema is missing.</summary>
    private static async Task<List<string>> TaskNamesAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT name FROM llm.task ORDER BY name");
        var names = new List<string>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            names.Add(reader.GetString(0));
        }

        return names;
    }

    private static async Task RequireTaskAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        var names = await TaskNamesAsync(dataSource, cancellationToken).ConfigureAwait(false);
        if (!names.Contains(task, StringComparer.Ordinal))
        {
            throw new CommandLineException(names.Count == 0
                ? $"unknown task '{task}': no task is registered (run 'pgllm migrate')."
                : $"unknown task '{task}'. Known tasks: {string.Join(", ", names)}.");
        }
    }
}
