// PgLlmApp: a worker that fills public.tickets.sentiment with a model's answer.
//
//   dotnet run                 migrate, insert one sample ticket, wait for its sentiment, print it, exit
//   dotnet run -- --serve      migrate, then run the worker until Ctrl+C (insert tickets with any SQL client)
//
// With nothing configured it starts a throwaway PostgreSQL (from the PostgreSQL server binaries on this
// machine) and PgLlm's deterministic local model. Set PGLLM_CONNECTION to use your database, and
// PGLLM_BASE_URL, PGLLM_API_KEY and PGLLM_MODEL to use an OpenAI-compatible endpoint.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm;
using PgLlm.Hosting;
using PgLlm.Local;
using PgLlmApp;

var serve = args.Contains("--serve");
var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(serve ? LogLevel.Information : LogLevel.Warning);

var configured = new PgLlmOptions();
PgLlmServiceCollectionExtensions.Bind(builder.Configuration, configured);
await using var localDatabase = configured.ConnectionString is null ? await LocalPostgres.StartAsync() : null;
await using var localModel = configured.BaseUrl is null ? await LocalModelServer.StartAsync() : null;
if (localDatabase is not null)
{
    builder.Configuration["PgLlm:ConnectionString"] = localDatabase.ConnectionString;
    Console.WriteLine($"PGLLM_CONNECTION is not set: a throwaway PostgreSQL runs at \"{localDatabase.ConnectionString}\" (removed at exit).");
}

if (localModel is not null)
{
    builder.Configuration["PgLlm:BaseUrl"] = localModel.BaseUrl.ToString();
    builder.Configuration["PgLlm:ApiKey"] = localModel.ApiKey;
    builder.Configuration["PgLlm:Model"] = "pgllm-local-deterministic";
    Console.WriteLine($"PGLLM_BASE_URL is not set: PgLlm's deterministic local model answers at {localModel.BaseUrl} (canned answers, not a real model).");
}

// The tickets table, then the generated triggers and queue, are migrated at start-up, before the worker starts.
builder.Services.AddPgLlm(builder.Configuration, TicketsSchema.All);
using var host = builder.Build();

if (serve)
{
    Console.WriteLine("Migrating, then filling tickets.sentiment until Ctrl+C. Try: INSERT INTO public.tickets (body) VALUES ('The app is great!');");
    await host.RunAsync();
    return 0;
}

await host.StartAsync();
var dataSource = host.Services.GetRequiredService<NpgsqlDataSource>();
const string body = "The app crashes every time I export, and support was slow to answer.";
await using (var insert = dataSource.CreateCommand("INSERT INTO public.tickets (body) VALUES ($1) RETURNING id"))
{
    insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = body });
    var id = (long)(await insert.ExecuteScalarAsync())!;
    Console.WriteLine($"Inserted ticket #{id}: {body}");

    // The insert returned at once; the worker calls the model and writes the answer moments later.
    await using var read = dataSource.CreateCommand("SELECT sentiment FROM public.tickets WHERE id = $1");
    read.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
    var deadline = DateTime.UtcNow.AddMinutes(2);
    string? sentiment;
    while ((sentiment = await read.ExecuteScalarAsync() as string) is null)
    {
        if (DateTime.UtcNow > deadline)
        {
            Console.Error.WriteLine($"Ticket #{id} has no sentiment after 2 minutes: see SELECT state, last_error FROM llm.job.");
            await host.StopAsync();
            return 1;
        }

        await Task.Delay(TimeSpan.FromMilliseconds(200));
    }

    Console.WriteLine($"Ticket #{id} sentiment: {sentiment}");
}

await host.StopAsync();
return 0;
