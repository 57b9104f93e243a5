using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Hosting;

namespace PgLlm.OperationsConsole;

/// <summary>The console's connections: every query runs as <see cref="PgLlmConsoleOptions.DatabaseRole"/>.</summary>
public sealed class ConsoleDatabase : IAsyncDisposable
{
    private readonly bool _owned;

    /// <summary>Opens the data source the options describe.</summary>
    public ConsoleDatabase(IOptions<PgLlmConsoleOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var settings = options.Value;
        if (settings.DataSource is not null)
        {
            DataSource = settings.DataSource;
            return;
        }

        if (string.IsNullOrWhiteSpace(settings.ConnectionString))
        {
            throw new InvalidOperationException(
                "The PgLlm console has no database: set PgLlmConsoleOptions.ConnectionString (or DataSource) in AddPgLlmConsole.");
        }

        var connectionString = PgLlmConnectionString.IsUrl(settings.ConnectionString)
            ? PgLlmConnectionString.ToNpgsql(settings.ConnectionString)
            : settings.ConnectionString;
        var builder = new NpgsqlConnectionStringBuilder(connectionString) { ApplicationName = "pgllm-console" };
        // Startup settings rather than SET after connecting: they are the session's defaults, so the pool's reset of a
        // returned connection (DISCARD ALL) keeps them. The role the queries run as; and no JIT compilation: the
        // overview's short index-backed queries have large cost estimates (subqueries per task), for which PostgreSQL
        // spent 160 ms compiling a 3 ms query; and room to aggregate a day of finished jobs in memory (the default 4 MB
        // sorted them on disk instead).
        var settingsText = "-c jit=off -c work_mem=32MB" + (string.IsNullOrEmpty(settings.DatabaseRole) ? string.Empty : " -c role=" + settings.DatabaseRole);
        builder.Options = string.IsNullOrEmpty(builder.Options) ? settingsText : builder.Options + " " + settingsText;

        DataSource = new NpgsqlDataSourceBuilder(builder.ConnectionString).Build();
        _owned = true;
    }

    /// <summary>The data source the console's queries use.</summary>
    public NpgsqlDataSource DataSource { get; }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_owned)
        {
            await DataSource.DisposeAsync().ConfigureAwait(false);
        }
    }
}
