using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.OperationsConsole;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    private Command CreateConsoleCommand()
    {
        var port = new Option<int>("--port", "-p") { Description = "The port to serve on, on 127.0.0.1 (0: any free port).", DefaultValueFactory = _ => 0 };
        var readOnly = new Option<bool>("--read-only") { Description = "Only show: no retry, pause, resume, release or cancel." };
        port.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 0 or > 65535)
            {
                result.AddError("--port must be between 0 and 65535.");
            }
        });
        var command = new Command(
            "console",
            "Serve the operations console (overview, endpoints, dead letters, search, row history, work in progress, actions) on 127.0.0.1 until Ctrl+C. " +
            "Its queries run as the role pgllm_console: the login needs GRANT pgllm_console TO my_login.");
        command.Options.Add(port);
        command.Options.Add(readOnly);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var options = ReadOptions(parseResult);
            await using (var dataSource = OpenDataSource(options))
            {
                await RequireConsoleRoleAsync(dataSource, cancellationToken).ConfigureAwait(false);
            }

            await using var app = BuildConsoleApp(options.ConnectionString!, parseResult.GetValue(port), parseResult.GetValue(readOnly));
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            WriteRaw("PgLlm console: " + address.TrimEnd('/') + "/" + (parseResult.GetValue(readOnly) ? " (read-only)" : string.Empty));
            Say($"Ctrl+C stops it.");
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }

            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
            return StoppedExitCode(cancellationToken);
        });
        return command;
    }

    /// <summary>The console's host: Kestrel on 127.0.0.1 only, the console at the root, every local user an operator unless read-only.</summary>
    private static WebApplication BuildConsoleApp(string connectionString, int port, bool readOnly)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(FormattableString.Invariant($"http://127.0.0.1:{port}"));
        builder.Logging.ClearProviders();
        builder.Services.AddPgLlmConsole(o =>
        {
            o.ConnectionString = PgLlmConnectionStringOrSelf(connectionString);
            o.ReadOnly = readOnly;
            o.AnonymousActor = Environment.UserName;
        });
        var app = builder.Build();
        app.MapPgLlmConsole("/");
        return app;
    }

    private static string PgLlmConnectionStringOrSelf(string connectionString) =>
        Hosting.PgLlmConnectionString.IsUrl(connectionString) ? Hosting.PgLlmConnectionString.ToNpgsql(connectionString) : connectionString;

    /// <summary>Fails with one line unless the role exists (queue step 14) and the login may act as it.</summary>
    private static async Task RequireConsoleRoleAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT current_user::text, to_regrole($1) IS NOT NULL, to_regrole($1) IS NOT NULL AND pg_has_role(current_user, $1, 'MEMBER')");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = PgLlmConsoleOptions.DefaultDatabaseRole });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        var login = reader.GetString(0);
        if (!reader.GetBoolean(1))
        {
            throw new CommandLineException("the role pgllm_console does not exist: run 'pgllm migrate' (queue step 14 makes it).");
        }

        if (!reader.GetBoolean(2))
        {
            throw new CommandLineException($"the login {login} may not act as pgllm_console, the role the console's queries run as: as the owner run GRANT pgllm_console TO {login};");
        }
    }
}
