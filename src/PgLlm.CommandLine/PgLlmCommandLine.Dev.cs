using System.CommandLine;
using System.Globalization;
using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    /// <summary>The model name <c>pgllm dev</c> serves (the deterministic local model answers any name).</summary>
    public const string DevModel = "pgllm-local-deterministic";

    private Command CreateDevCommand()
    {
        var runWorker = new Option<bool>("--worker") { Description = "Also run the worker against them, so inserted rows get their answers." };
        var command = new Command(
            "dev",
            "Start a throwaway PostgreSQL and PgLlm's deterministic local model for development, migrate (with --assembly's or the application's scripts), print how to connect, and wait until Ctrl+C, which stops both.");
        command.Options.Add(_assembly);
        command.Options.Add(runWorker);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            // Read the scripts first: a wrong --assembly fails before anything starts.
            var scripts = parseResult.GetValue(_assembly) is { Length: > 0 } || _scripts is not null ? Scripts(parseResult) : [];
            if (!LocalPostgres.IsAvailable(out var reason))
            {
                throw new CommandLineException("cannot start a local PostgreSQL: " + reason);
            }

            Say($"Starting a throwaway PostgreSQL and the deterministic local model...");
            await using var postgres = await LocalPostgres.StartAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            await using var model = await LocalModelServer.StartAsync(
                new LocalModelServerOptions { RecordRequests = false, Models = [DevModel] }, cancellationToken).ConfigureAwait(false);
            var connectionString = await postgres.CreateDatabaseAsync("pgllm", cancellationToken).ConfigureAwait(false);

            await using (var dataSource = NpgsqlDataSource.Create(connectionString))
            {
                var result = await new PgLlmMigrator(dataSource, scripts).MigrateAsync(cancellationToken).ConfigureAwait(false);
                Say($"Migrated: {result.Applied.Count} of {result.ScriptCount} scripts applied ({scripts.Count} of them the application's).");
            }

            var url = PostgresUrl(connectionString);
            WriteRaw(string.Empty);
            WriteRaw("PostgreSQL    " + url);
            WriteRaw("              " + connectionString);
            WriteRaw("Model         " + model.BaseUrl + " (model " + DevModel + ": canned, deterministic answers)");
            WriteRaw(string.Empty);
            WriteRaw("To use them from your application, set:");
            WriteRaw("PGLLM_CONNECTION=\"" + connectionString + "\"");
            WriteRaw("PGLLM_BASE_URL=" + model.BaseUrl);
            WriteRaw("PGLLM_API_KEY=" + model.ApiKey);
            WriteRaw("PGLLM_MODEL=" + DevModel);
            WriteRaw(string.Empty);

            var options = ReadOptions(null);
            options.ConnectionString = connectionString;
            options.BaseUrl = model.BaseUrl.ToString();
            options.ApiKey = model.ApiKey;
            options.Model = DevModel;
            if (parseResult.GetValue(runWorker))
            {
                Say($"Running the worker; Ctrl+C stops it, the database and the model.");
                return await RunWorkerHostAsync(options, cancellationToken).ConfigureAwait(false);
            }

            Say($"Ready. Ctrl+C stops the database and the model (their data is deleted).");
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }

            Say($"Stopping the database and the model.");
            return StoppedExitCode(cancellationToken);
        });
        return command;
    }

    /// <summary>The <c>postgres://user@host:port/database</c> form of a connection string (without any password).</summary>
    private static string PostgresUrl(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        var user = Uri.EscapeDataString(builder.Username ?? "postgres");
        var host = builder.Host ?? "localhost";
        return string.Create(CultureInfo.InvariantCulture, $"postgres://{user}@{host}:{builder.Port}/{Uri.EscapeDataString(builder.Database ?? "postgres")}");
    }
}
