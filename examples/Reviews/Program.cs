// The PgLlm example: the reference article's use cases. Reviews get their sentiment, a Spanish
// translation, a background summary from a name and the text of an attached image; one call fills an
// emotion and a translation together; receipts get their total and taxes as numbers from an image.
//
//   dotnet run --project examples/Reviews              demo: migrate, insert reviews, drain, print, exit
//   dotnet run --project examples/Reviews -- --serve   migrate, then run the worker until Ctrl+C
//   dotnet run --project examples/Reviews -- --write-sql [folder]   write the generated SQL (default: examples/Reviews/Sql)
//
// With nothing configured it starts a throwaway PostgreSQL and PgLlm's deterministic local model
// endpoint. Set PGLLM_CONNECTION to use your database, and PGLLM_BASE_URL, PGLLM_API_KEY and
// PGLLM_MODEL to use a real OpenAI-compatible provider.
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Npgsql;
using PgLlm;
using PgLlm.Hosting;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Worker;
using Reviews;

if (args is ["--write-sql", ..])
{
    // The project's own Sql folder, wherever the command runs from (the build records the project folder).
    var project = typeof(ReviewsSchema).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "ProjectDirectory")?.Value;
    if (args.Length < 2 && !Directory.Exists(project))
    {
        Console.Error.WriteLine("error: the example's project folder is not where it was built; name the folder: --write-sql path/to/Sql");
        return 2;
    }

    var folder = Path.GetFullPath(args.Length > 1 ? args[1] : Path.Combine(project!, ReviewsSchema.GeneratedSqlFolder));
    // Only what changed is rewritten: a committed file that is already right is left alone. Write is given
    // every script, as it deletes the folder's generated files that no script produces (tables removed).
    var changes = PgLlmScriptFolder.Write(folder, PgLlm.Generated.PgLlmScripts.All);
    var written = changes.Count(c => c.EndsWith(": written", StringComparison.Ordinal));
    Console.WriteLine($"Wrote {written} of {PgLlm.Generated.PgLlmScripts.All.Count} scripts to {folder} (the others were up to date)");
    foreach (var deleted in changes.Where(c => c.EndsWith(": deleted", StringComparison.Ordinal)))
    {
        Console.WriteLine("Deleted " + deleted[..^": deleted".Length] + " (no table declares it any more)");
    }

    return 0;
}

var serve = args.Contains("--serve");
var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(serve ? LogLevel.Information : LogLevel.Warning);
// Warnings and errors on stderr, the rest on stdout.
builder.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Warning);
var configured = new PgLlmOptions();
PgLlmServiceCollectionExtensions.Bind(builder.Configuration, configured);

await using var localDatabase = configured.ConnectionString is null ? await StartLocalDatabaseAsync() : null;
await using var localModel = configured.BaseUrl is null ? await StartLocalModelAsync() : null;
if (localDatabase is not null)
{
    builder.Configuration["PgLlm:ConnectionString"] = localDatabase.ConnectionString;
}

if (localModel is not null)
{
    builder.Configuration["PgLlm:BaseUrl"] = localModel.BaseUrl.ToString();
    builder.Configuration["PgLlm:ApiKey"] = localModel.ApiKey;
    builder.Configuration["PgLlm:Model"] = "pgllm-local-deterministic";
}
else
{
    Console.WriteLine($"Model endpoint: {configured.BaseUrl} (model {configured.Model ?? "(PGLLM_MODEL not set)"})");
}

// In --serve mode the host migrates at start-up, before the worker starts.
builder.Services.AddPgLlm(builder.Configuration, serve ? ReviewsSchema.All : null);
using var host = builder.Build();

if (serve)
{
    if (localDatabase is not null)
    {
        var database = new NpgsqlConnectionStringBuilder(localDatabase.ConnectionString);
        Console.WriteLine($"""
            The throwaway database, while this runs:
              connection string: {localDatabase.ConnectionString}
              psql:              psql "host={database.Host} port={database.Port} dbname={database.Database} user={database.Username}"
            Try, in psql or any client:
              INSERT INTO public.user_reviews (review_text) VALUES ('The soup was cold but the staff were lovely.');
              SELECT id, review_text, sentiment FROM public.user_reviews ORDER BY id DESC LIMIT 5;
            """);
    }

    Console.WriteLine("Migrating, then draining the queue until Ctrl+C.");
    // A setting or a database that does not work is logged as one line, and the exit code is then 1.
    await host.RunAsync();
    return Environment.ExitCode;
}

// Settings that cannot work, an unreachable database or a failed migration: one line and exit code 1.
NpgsqlDataSource dataSource;
PgLlmWorker worker;
PgLlmMigrationResult migrated;
try
{
    dataSource = host.Services.GetRequiredService<NpgsqlDataSource>();
    worker = host.Services.GetRequiredService<PgLlmWorker>();
    migrated = await new PgLlmMigrator(dataSource, ReviewsSchema.All).MigrateAsync();
}
catch (Exception ex) when (ex is InvalidOperationException or PgLlmMigrationException or NpgsqlException)
{
    var message = ex is NpgsqlException { InnerException: { } cause } and not PostgresException
        ? $"cannot reach PostgreSQL at {PgLlmConnectionString.Describe(builder.Configuration["PgLlm:ConnectionString"] ?? configured.ConnectionString)}: {cause.Message}"
        : ex.Message;
    Console.Error.WriteLine("error: " + message.ReplaceLineEndings(" "));
    return 1;
}

Console.WriteLine($"Migrations: {migrated.Applied.Count} scripts applied" + (migrated.Applied.Count == 0 ? " (database already up to date)." : "."));

var reviews = new (string ReviewText, string OriginalReview, string? FullName, string? ImageUrl)[]
{
    ("I love this hackathon, I can build anything I want!", "The food was great and the service was very good", "Ada Lovelace", "https://images.example.com/reviews/menu-board.jpg"),
    ("The delivery was slow and the box arrived broken.", "This product is bad and the support was terrible", "Grace Hopper", null),
    ("It arrived on Tuesday.", "The package is here", null, "https://images.example.com/reviews/shipping-label.png"),
};
var receipts = new[]
{
    "https://images.example.com/receipts/cafe-2024-05-01.jpg",
    "https://images.example.com/receipts/hardware-store.png",
};

await using (var batch = dataSource.CreateBatch())
{
    foreach (var (text, original, name, image) in reviews)
    {
        batch.BatchCommands.Add(new NpgsqlBatchCommand(
            "INSERT INTO public.user_reviews (review_text, user_review_og, full_name, attached_image_url) VALUES ($1, $2, $3, $4)")
        {
            Parameters = { new() { Value = text }, new() { Value = original }, new() { Value = (object?)name ?? DBNull.Value }, new() { Value = (object?)image ?? DBNull.Value } },
        });
    }

    foreach (var url in receipts)
    {
        batch.BatchCommands.Add(new NpgsqlBatchCommand("INSERT INTO public.receipts (image_url) VALUES ($1)") { Parameters = { new() { Value = url } } });
    }

    await batch.ExecuteNonQueryAsync();
}

Console.WriteLine($"Inserted {reviews.Length} reviews and {receipts.Length} receipts; the inserts returned at once, the model columns are still empty.");
using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
var settled = await worker.RunUntilIdleAsync(timeout.Token);
Console.WriteLine($"The worker ran {settled} jobs. The rows now read:");
Console.WriteLine();

await using (var command = dataSource.CreateCommand(
    "SELECT id, review_text, sentiment, review_text_es, full_name, user_background, attached_image_url, image_description, " +
    "user_review_og, emotion, user_review_es FROM public.user_reviews ORDER BY id DESC LIMIT $1"))
{
    command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = reviews.Length });
    await using var reader = await command.ExecuteReaderAsync();
    string[] labels = ["review_text", "sentiment", "review_text_es", "full_name", "user_background", "attached_image_url", "image_description", "user_review_og", "emotion", "user_review_es"];
    while (await reader.ReadAsync())
    {
        Console.WriteLine($"#{reader.GetInt64(0)}");
        for (var i = 0; i < labels.Length; i++)
        {
            Console.WriteLine($"   {labels[i],-18} : {Show(reader, i + 1)}");
        }

        Console.WriteLine();
    }
}

await using (var command = dataSource.CreateCommand("SELECT id, image_url, total, taxes FROM public.receipts ORDER BY id DESC LIMIT $1"))
{
    command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = receipts.Length });
    await using var reader = await command.ExecuteReaderAsync();
    while (await reader.ReadAsync())
    {
        // total and taxes are numeric columns: the answers arrived as numbers and were checked as such.
        Console.WriteLine($"receipt #{reader.GetInt64(0)} {reader.GetString(1)}");
        Console.WriteLine($"   total : {(reader.IsDBNull(2) ? "(null)" : reader.GetDecimal(2).ToString(System.Globalization.CultureInfo.InvariantCulture))}" +
                          $"   taxes : {(reader.IsDBNull(3) ? "(null)" : reader.GetDecimal(3).ToString(System.Globalization.CultureInfo.InvariantCulture))}");
    }

    Console.WriteLine();
}

await using (var command = dataSource.CreateCommand("SELECT state, count(*) FROM llm.job GROUP BY state ORDER BY state"))
{
    await using var reader = await command.ExecuteReaderAsync();
    var states = new List<string>();
    while (await reader.ReadAsync())
    {
        states.Add($"{reader.GetString(0)}: {reader.GetInt64(1)}");
    }

    Console.WriteLine("Jobs in llm.job by state: " + string.Join(", ", states));
}

return 0;

static string Show(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? "(null)" : reader.GetString(ordinal);

static async Task<LocalPostgres> StartLocalDatabaseAsync()
{
    Console.WriteLine("PGLLM_CONNECTION is not set: starting a throwaway PostgreSQL from the local binaries.");
    return await LocalPostgres.StartAsync();
}

static async Task<LocalModelServer> StartLocalModelAsync()
{
    Console.WriteLine("PGLLM_BASE_URL is not set: using PgLlm's deterministic local model endpoint on 127.0.0.1.");
    Console.WriteLine("Its answers are canned rules (a word list for sentiment, a small dictionary for Spanish, numbers from a hash), not a real model.");
    return await LocalModelServer.StartAsync();
}
