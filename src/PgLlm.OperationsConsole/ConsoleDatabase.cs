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
        if (!string.IsNullOrEmpty(settings.DatabaseRole))
        {
            // The role as a startup setting rather than a SET ROLE after connecting: it is the session's default, so the
            // pool's reset of a returned connection (DISCARD ALL) keeps it.
            var role = "-c role=" + settings.DatabaseRole;
            builder.Options = string.IsNullOrEmpty(builder.Options) ? role : builder.Options + " " + role;
        }

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
