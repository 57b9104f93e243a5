using System.Data;
using DbUp.Engine;
using DbUp.Engine.Transactions;

namespace PgLlm.Migrations;

/// <summary>
/// A DbUp journal where a script counts as executed only while it is the latest applied script of
/// its stream. A prompt changed from A to B and back to A therefore applies A again, which a plain
/// name journal would skip.
/// </summary>
internal sealed class StreamJournal : IJournal
{
    private const string Table = "llm.migration";
    private readonly Func<IConnectionManager> _connectionManager;

    public StreamJournal(Func<IConnectionManager> connectionManager) => _connectionManager = connectionManager;

    public string[] GetExecutedScripts() =>
        _connectionManager().ExecuteCommandsWithManagedConnection(factory =>
        {
            using var exists = factory();
            exists.CommandText = "SELECT to_regclass('llm.migration') IS NOT NULL";
            if (exists.ExecuteScalar() is not true)
            {
                return Array.Empty<string>();
            }

            using var command = factory();
            command.CommandText = "SELECT DISTINCT ON (stream) script_name FROM " + Table + " ORDER BY stream, id DESC";
            using var reader = command.ExecuteReader();
            var names = new List<string>();
            while (reader.Read())
            {
                names.Add(reader.GetString(0));
            }

            return names.ToArray();
        });

    public void StoreExecutedScript(SqlScript script, Func<IDbCommand> dbCommandFactory)
    {
        EnsureTableExistsAndIsLatestVersion(dbCommandFactory);
        using var command = dbCommandFactory();
        command.CommandText = "INSERT INTO " + Table + " (stream, script_name) VALUES (@stream, @name)";
        AddParameter(command, "stream", PgLlmScript.StreamOf(script.Name));
        AddParameter(command, "name", script.Name);
        command.ExecuteNonQuery();
    }

    public void EnsureTableExistsAndIsLatestVersion(Func<IDbCommand> dbCommandFactory)
    {
        using var command = dbCommandFactory();
        command.CommandText =
            "CREATE SCHEMA IF NOT EXISTS llm;\n" +
            "CREATE TABLE IF NOT EXISTS " + Table + " (\n" +
            "    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n" +
            "    stream      text NOT NULL,\n" +
            "    script_name text NOT NULL,\n" +
            "    applied_at  timestamptz NOT NULL DEFAULT now()\n" +
            ");";
        command.ExecuteNonQuery();
    }

    private static void AddParameter(IDbCommand command, string name, string value)
    {
        var parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }
}
