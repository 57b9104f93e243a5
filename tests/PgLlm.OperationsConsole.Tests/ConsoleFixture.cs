using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Worker;
using PuppeteerSharp;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>
/// One PostgreSQL server, one local model endpoint and (when the system has one) one headless Chromium, shared by
/// the console's tests; each test gets a database of its own and a console served by Kestrel on 127.0.0.1.
/// </summary>
public sealed class ConsoleFixture : IAsyncLifetime
{
    public const string ConsoleLogin = "pgllm_console_test_login";

    public LocalPostgres Postgres { get; private set; } = null!;

    public LocalModelServer Model { get; private set; } = null!;

    /// <summary>The browser; null when none was found (the browser tests are skipped then).</summary>
    public IBrowser? Browser { get; private set; }

    public static IReadOnlyList<PgLlmScript> Scripts { get; } =
    [
        PgLlmScript.Application("0001-console-tables", ReadSchema("0001-console-tables.sql")),
        .. PgLlm.Generated.PgLlmScripts.All,
    ];

    public async Task InitializeAsync()
    {
        Postgres = await LocalPostgres.StartAsync();
        Model = await LocalModelServer.StartAsync();
        if (SystemBrowser.Find(out _) is { } executable)
        {
            Browser = await Puppeteer.LaunchAsync(new LaunchOptions
            {
                ExecutablePath = executable,
                Headless = true,
                Args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"],
                DefaultViewport = new ViewPortOptions { Width = 1280, Height = 900 },
            });
        }
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null)
        {
            await Browser.CloseAsync();
            await Browser.DisposeAsync();
        }

        await Model.DisposeAsync();
        await Postgres.DisposeAsync();
    }

    /// <summary>A fresh database with the scripts applied, and a login that is a member of pgllm_console only.</summary>
    public async Task<TestDatabase> CreateDatabaseAsync()
    {
        var connectionString = await Postgres.CreateDatabaseAsync();
        var owner = NpgsqlDataSource.Create(connectionString);
        await new PgLlmMigrator(owner, Scripts).MigrateAsync();
        await owner.ExecAsync($"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ConsoleLogin}') THEN CREATE ROLE {ConsoleLogin} LOGIN; END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$;
            GRANT pgllm_console TO {ConsoleLogin};
            """);
        var login = new NpgsqlConnectionStringBuilder(connectionString) { Username = ConsoleLogin, Password = null }.ConnectionString;
        return new TestDatabase(owner, login);
    }

    /// <summary>A worker against the local endpoint, with test-friendly timings.</summary>
    public PgLlmWorker CreateWorker(NpgsqlDataSource dataSource)
    {
        var options = new PgLlmOptions
        {
            BaseUrl = Model.BaseUrl.ToString(),
            ApiKey = Model.ApiKey,
            Model = "test-model",
            Worker = new PgLlmWorkerOptions
            {
                Concurrency = 4,
                PollInterval = TimeSpan.FromMilliseconds(200),
                RetryBaseDelay = TimeSpan.FromMilliseconds(20),
                RetryMaxDelay = TimeSpan.FromMilliseconds(100),
                ModelTimeout = TimeSpan.FromSeconds(30),
                ShutdownGrace = TimeSpan.FromSeconds(5),
            },
        };
        return new PgLlmWorker(dataSource, ChatClientFactory.Create(options), Options.Create(options));
    }

    /// <summary>Serves the console over <paramref name="db"/> on 127.0.0.1 and a free port; users come from the <c>test-user</c> cookie (<c>name:role</c>).</summary>
    public static async Task<ConsoleHost> StartConsoleAsync(TestDatabase db, Action<PgLlmConsoleOptions>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddAuthentication(CookieUserHandler.SchemeName).AddScheme<AuthenticationSchemeOptions, CookieUserHandler>(CookieUserHandler.SchemeName, null);
        builder.Services.AddAuthorization(o => o.AddPolicy("pgllm-operator", p => p.RequireRole("operator")));
        builder.Services.AddPgLlmConsole(o =>
        {
            o.ConnectionString = db.ConsoleConnectionString;
            o.OperatorPolicy = "pgllm-operator";
            o.RefreshInterval = TimeSpan.FromMilliseconds(300);
            configure?.Invoke(o);
        });
        var app = builder.Build();
        app.UseAuthentication();
        app.UseAuthorization();
        app.MapPgLlmConsole("/pgllm").RequireAuthorization();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new ConsoleHost(app, new Uri(address.TrimEnd('/') + "/pgllm/"));
    }

    private static string ReadSchema(string name)
    {
        using var stream = typeof(ConsoleFixture).Assembly.GetManifestResourceStream("PgLlm.OperationsConsole.Tests.Schema." + name)!;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

/// <summary>A test's database: the owner's data source (the test's SQL) and the console's login.</summary>
public sealed record TestDatabase(NpgsqlDataSource Owner, string ConsoleConnectionString) : IAsyncDisposable
{
    public ValueTask DisposeAsync() => Owner.DisposeAsync();
}

/// <summary>A running console, stopped when disposed.</summary>
public sealed record ConsoleHost(WebApplication App, Uri Url) : IAsyncDisposable
{
    public async ValueTask DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
    }
}

/// <summary>The test's users: the cookie <c>test-user=name:role</c> signs in <c>name</c> with <c>role</c>; no cookie, no user.</summary>
public sealed class CookieUserHandler(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "TestCookieUser";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!Request.Cookies.TryGetValue("test-user", out var value) || value.Split(':') is not [var name, var role])
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, name), new Claim(ClaimTypes.Role, role)], SchemeName);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
    }
}

[CollectionDefinition(Name)]
public sealed class ConsoleGroup : ICollectionFixture<ConsoleFixture>
{
    public const string Name = "PgLlm console";
}
