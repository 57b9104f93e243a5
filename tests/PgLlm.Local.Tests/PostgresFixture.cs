namespace PgLlm.Local.Tests;

/// <summary>One throwaway PostgreSQL server shared by the tests of a class.</summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    private LocalPostgres? _server;

    public LocalPostgres Server => _server ?? throw new InvalidOperationException("The fixture has not started.");

    public TimeSpan StartupTime { get; private set; }

    public async Task InitializeAsync()
    {
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        _server = await LocalPostgres.StartAsync();
        StartupTime = stopwatch.Elapsed;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}
