using DbUp;
using DbUp.Engine;
using DbUp.Engine.Output;
using DbUp.Postgresql;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace PgLlm.Migrations;

/// <summary>The outcome of a migration run.</summary>
/// <param name="Applied">The names of the scripts this run applied (empty when the database was up to date).</param>
public sealed record PgLlmMigrationResult(IReadOnlyList<string> Applied)
{
    /// <summary>How many scripts the run considered: those given and the queue's own migrations.</summary>
    public int ScriptCount { get; init; }

    /// <summary>
    /// One line per task whose definition (prompt, system prompt, model, schema, options) this run changed: its rows
    /// stale, current and never filled, the estimate of re-running the stale ones, and what to run next
    /// (<see cref="Planning.TaskPlan.DescribeChange"/>). Empty when no definition changed.
    /// </summary>
    public IReadOnlyList<string> DefinitionChanges { get; init; } = [];
}

/// <summary>
/// Applies PgLlm's scripts (and the application's own, if given) with DbUp, one transaction per
/// script, journaled in <c>llm.migration</c>: the application's scripts, then the queue's numbered
/// migrations (<see cref="PgLlmQueueMigrations"/>, always added), then the runtime's add-ons, then the tables'.
/// Between the application's scripts and the rest, every declared table is compared with the database
/// (<see cref="PgLlmScript.Table"/>): a mismatch stops the run with nothing of PgLlm's applied. Safe to run at every start-up and from several
/// processes at once: runs are serialized by an advisory lock, and an up-to-date database is left untouched.
/// </summary>
public sealed partial class PgLlmMigrator
{
    // Any constant works; it only has to be the same for every PgLlm process.
    private const long AdvisoryLockKey = 0x50674c6c6d4d6967; // "PgLlmMig"

    /// <summary>The oldest PostgreSQL major version PgLlm runs on (the one it is tested with).</summary>
    public const int MinimumPostgresVersion = 15;

    private readonly NpgsqlDataSource _dataSource;
    private readonly IReadOnlyList<PgLlmScript> _given;
    private readonly ILogger _logger;

    /// <summary>Creates a migrator for the given scripts (typically <c>PgLlm.Generated.PgLlmScripts.All</c>).</summary>
    public PgLlmMigrator(NpgsqlDataSource dataSource, IEnumerable<PgLlmScript> scripts, ILogger<PgLlmMigrator>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(scripts);
        _dataSource = dataSource;
        _given = scripts.ToList();
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        var duplicate = _given.GroupBy(s => s.Stream).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Two scripts share the stream '{duplicate.Key}'.", nameof(scripts));
        }
    }

    /// <summary>
    /// The oldest server accepted, as <c>server_version_num</c> (major * 10000); tests raise it to see a
    /// server refused.
    /// </summary>
    internal int MinimumServerVersionNum { get; init; } = MinimumPostgresVersion * 10000;

    /// <summary>The queue's migrations this migrator adds: all of them; tests take the first few to migrate step by step.</summary>
    internal IReadOnlyList<PgLlmScript> QueueMigrations { get; init; } = PgLlmQueueMigrations.All;

    /// <summary>
    /// The settings whose prices, endpoints and limits estimate a changed definition's re-run (see
    /// <see cref="PgLlmMigrationResult.DefinitionChanges"/>); without them, the database's prices and shared limits.
    /// </summary>
    public PgLlmOptions? PlanOptions { get; init; }

    /// <summary>The scripts this migrator applies, in no particular order: the queue's migrations and those given.</summary>
    private IReadOnlyList<PgLlmScript> Scripts => [.. QueueMigrations.Where(q => !_given.Any(s => s.Stream == q.Stream)), .. _given];

    /// <summary>Applies every script that is not yet applied in its current version.</summary>
    /// <exception cref="PgLlmMigrationException">
    /// The server is older than <see cref="MinimumPostgresVersion"/> (nothing applied), or a script failed (its transaction was rolled back).
    /// </exception>
    public async Task<PgLlmMigrationResult> MigrateAsync(CancellationToken cancellationToken = default)
    {
        await using var lockConnection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using (var acquire = new NpgsqlCommand("SELECT pg_advisory_lock(@key)", lockConnection))
        {
            acquire.Parameters.AddWithValue("key", AdvisoryLockKey);
            await acquire.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            await VerifyServerVersionAsync(lockConnection, cancellationToken).ConfigureAwait(false);

            // The opt-in in-database worker names a missing extension before anything is applied.
            await InDatabase.PgLlmInDatabase.VerifyRequirementsAsync(lockConnection, Scripts, cancellationToken).ConfigureAwait(false);

            // The application's own scripts first (they may create the tables), then the tables are
            // checked, and only then is anything of PgLlm's applied. DbUp is synchronous; keep it off the caller's thread.
            var scripts = Scripts;
            var application = scripts.Where(s => s.Kind == PgLlmScriptKind.Application).ToList();
            var appliedFirst = application.Count == 0 ? [] : await Task.Run(() => Upgrade(application), cancellationToken).ConfigureAwait(false);
            await VerifyTablesAsync(lockConnection, cancellationToken).ConfigureAwait(false);
            var definitions = await DefinitionHashesAsync(lockConnection, cancellationToken).ConfigureAwait(false);
            var applied = await Task.Run(() => Upgrade(scripts), cancellationToken).ConfigureAwait(false);
            var changes = applied.Count == 0 ? [] : await DescribeChangesAsync(lockConnection, definitions, cancellationToken).ConfigureAwait(false);
            return new PgLlmMigrationResult([.. appliedFirst, .. applied]) { ScriptCount = scripts.Count, DefinitionChanges = changes };
        }
        finally
        {
            await using var release = new NpgsqlCommand("SELECT pg_advisory_unlock(@key)", lockConnection);
            release.Parameters.AddWithValue("key", AdvisoryLockKey);
            await release.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Refuses a server older than the minimum with one line, before anything is applied.</summary>
    private async Task VerifyServerVersionAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT current_setting('server_version_num')::integer, current_setting('server_version')", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        var number = reader.GetInt32(0);
        if (number < MinimumServerVersionNum)
        {
            throw new PgLlmMigrationException(
                $"PgLlm needs PostgreSQL {MinimumServerVersionNum / 10000} or later, and this server runs PostgreSQL {reader.GetString(1)}: nothing was applied.", null);
        }
    }

    /// <summary>
    /// Compares every declared table with the database (<see cref="TableCheck"/>); any problem stops the run
    /// before the queue's and tables' scripts, with one line per problem and the DDL that fixes it.
    /// </summary>
    private async Task VerifyTablesAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var tables = _given.Select(s => s.Table).OfType<PgLlmTableShape>().ToList();
        var problems = await TableCheck.ProblemsAsync(connection, tables, cancellationToken).ConfigureAwait(false);
        if (problems.Count > 0)
        {
            throw new PgLlmMigrationException(string.Join("\n", problems), null) { Problems = problems };
        }
    }

    private List<string> Upgrade(IReadOnlyList<PgLlmScript> scripts)
    {
        var upgradeLog = new LoggerUpgradeLog(_logger);
        var builder = DeployChanges.To
            .PostgresqlDatabase(new PostgresqlConnectionManager(_dataSource))
            .WithScripts(scripts.Select(s => new SqlScript(s.Name, s.Sql, new SqlScriptOptions { RunGroupOrder = RunOrder(s.Kind) })))
            .JournalTo((connectionManager, _) => new StreamJournal(connectionManager))
            .WithTransactionPerScript()
            .WithVariablesDisabled()
            .LogTo(upgradeLog);
        var result = builder.Build().PerformUpgrade();
        if (!result.Successful)
        {
            throw new PgLlmMigrationException(
                $"Migration script '{result.ErrorScript?.Name}' failed and was rolled back: {result.Error?.Message}", result.Error);
        }

        var applied = result.Scripts.Select(s => s.Name).ToList();
        foreach (var name in applied)
        {
            LogApplied(_logger, name);
        }

        return applied;
    }

    /// <summary>DbUp's run group of a kind of script: application, queue, the runtime's add-ons, tables.</summary>
    private static int RunOrder(PgLlmScriptKind kind) => kind switch
    {
        PgLlmScriptKind.Application => 0,
        PgLlmScriptKind.Queue => 1,
        PgLlmScriptKind.Core => 2,
        _ => 3,
    };

    /// <summary>Each registered task's definition hash; empty before the queue's schema exists.</summary>
    private static async Task<Dictionary<string, string>> DefinitionHashesAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        await using var command = new NpgsqlCommand("SELECT name, definition_hash FROM llm.task", connection);
        try
        {
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                hashes[reader.GetString(0)] = reader.GetString(1);
            }
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName)
        {
            // No queue schema yet: no task had a definition.
        }

        return hashes;
    }

    /// <summary>
    /// One line per task that had a definition before the run and has another now (<see cref="Planning.TaskPlan.DescribeChange"/>),
    /// each logged. A plan that cannot be made does not fail the migration: its line says so.
    /// </summary>
    private async Task<List<string>> DescribeChangesAsync(NpgsqlConnection connection, Dictionary<string, string> before, CancellationToken cancellationToken)
    {
        var after = await DefinitionHashesAsync(connection, cancellationToken).ConfigureAwait(false);
        var changes = new List<string>();
        foreach (var (task, hash) in after.Where(a => before.TryGetValue(a.Key, out var old) && old != a.Value).OrderBy(a => a.Key, StringComparer.Ordinal))
        {
            string line;
            try
            {
                var plan = await Planning.PlanEstimator.ReadAsync(_dataSource, PlanOptions, task, cancellationToken).ConfigureAwait(false);
                line = plan.Count == 1 ? plan[0].DescribeChange(before[task]) : $"{task}: definition changed; run `pgllm plan` / `pgllm rerun`";
            }
            catch (NpgsqlException ex)
            {
                line = $"{task}: definition changed ({before[task]} -> {hash}); no plan ({ex.Message}); run `pgllm plan` / `pgllm rerun`";
            }

            LogDefinitionChanged(_logger, line);
            changes.Add(line);
        }

        return changes;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Change}")]
    private static partial void LogDefinitionChanged(ILogger logger, string change);

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied migration script {Script}")]
    private static partial void LogApplied(ILogger logger, string script);

    [LoggerMessage(Level = LogLevel.Error, Message = "{Message}")]
    private static partial void LogDbUpError(ILogger logger, Exception exception, string message);

    [LoggerMessage(Message = "{Message}")]
    private static partial void LogDbUp(ILogger logger, LogLevel level, string message);

    /// <summary>Routes DbUp's messages to the logger at debug level (script names are logged once, above).</summary>
    private sealed class LoggerUpgradeLog(ILogger logger) : IUpgradeLog
    {
        public void LogTrace(string format, params object[] args) => Log(LogLevel.Trace, format, args);

        public void LogDebug(string format, params object[] args) => Log(LogLevel.Debug, format, args);

        public void LogInformation(string format, params object[] args) => Log(LogLevel.Debug, format, args);

        public void LogWarning(string format, params object[] args) => Log(LogLevel.Warning, format, args);

        public void LogError(string format, params object[] args) => Log(LogLevel.Error, format, args);

        public void LogError(Exception ex, string format, params object[] args)
        {
            if (logger.IsEnabled(LogLevel.Error))
            {
                LogDbUpError(logger, ex, string.Format(System.Globalization.CultureInfo.InvariantCulture, format, args));
            }
        }

        private void Log(LogLevel level, string format, object[] args)
        {
            if (logger.IsEnabled(level))
            {
#pragma warning disable CA1873 // Guarded by IsEnabled above; the analyzer cannot see through a variable level.
                LogDbUp(logger, level, string.Format(System.Globalization.CultureInfo.InvariantCulture, format, args));
#pragma warning restore CA1873
            }
        }
    }
}

/// <summary>
/// A migration could not run: the server is too old, a declared table does not match what its tasks need
/// (<see cref="Problems"/>, one line each; nothing of PgLlm's was applied), or a script failed.
/// </summary>
public sealed class PgLlmMigrationException : Exception
{
    /// <summary>Creates the exception.</summary>
    public PgLlmMigrationException(string message, Exception? inner)
        : base(message, inner)
    {
    }

    /// <summary>The tables' problems, one readable line each with the DDL that fixes it; empty when the migration failed otherwise.</summary>
    public IReadOnlyList<string> Problems { get; init; } = [];
}
