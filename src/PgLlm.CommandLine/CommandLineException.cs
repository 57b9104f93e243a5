using System.Net.Sockets;
using Npgsql;

namespace PgLlm.Cli;

/// <summary>A mistake the user can fix (a bad option, an unknown task, an unreachable server), reported without a stack trace.</summary>
public sealed class CommandLineException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CommandLineException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>Turns the exceptions a command can meet into the message the user sees; null for bugs (shown in full).</summary>
    internal static string? Describe(Exception exception, string? connectionString) => exception switch
    {
        CommandLineException cli => cli.Message,
        PgLlm.Migrations.PgLlmMigrationException migration => migration.Message,
        PgLlm.Hosting.PgLlmConfigurationException configuration => configuration.Message,
        PostgresException { SqlState: "3F000" or "42P01" or "42883" } pg when pg.MessageText.Contains("llm", StringComparison.Ordinal) =>
            $"the database has no PgLlm schema, or an older one ({pg.MessageText}): run 'pgllm migrate' first.",
        PostgresException { SqlState: "28P01" or "28000" } pg => $"PostgreSQL refused the login: {pg.MessageText}.",
        PostgresException { SqlState: "3D000" } pg => $"the database does not exist: {pg.MessageText}.",
        PostgresException pg => $"PostgreSQL error {pg.SqlState}: {pg.MessageText}.",
        NpgsqlException npgsql when npgsql.InnerException is SocketException or TimeoutException or IOException || npgsql.IsTransient =>
            $"cannot connect to PostgreSQL at {Endpoint(connectionString)}: {npgsql.InnerException?.Message ?? npgsql.Message}",
        NpgsqlException npgsql => "database error: " + npgsql.Message,
        _ => null,
    };

    private static string Endpoint(string? connectionString)
    {
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(connectionString);
            return $"{builder.Host ?? "localhost"}:{builder.Port}";
        }
        catch (ArgumentException)
        {
            return "(unreadable connection string)";
        }
    }
}
