using System.Net;
using System.Text.RegularExpressions;
using Npgsql;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>Every page's queries use indexes over a long history: PostgreSQL's own plans (auto_explain) show no scan of the whole queue.</summary>
[Collection(ConsoleGroup.Name)]
public sealed partial class ConsolePlanTests(ConsoleFixture fixture)
{
    private const int HistoryJobs = 200_000;

    [Fact]
    public async Task No_page_reads_the_whole_queue_with_a_long_history()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync($"""
            INSERT INTO llm.job (task, row_key, state, attempt, max_attempts, created_at, attempted_at, finished_at, input_tokens, output_tokens, estimated_cost, last_error)
            SELECT 'public.tickets:ticket_category', jsonb_build_object('id', g % 50000 + 1),
                   CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'superseded' ELSE 'succeeded' END, 1, 3,
                   t - interval '2 seconds', t - interval '1 second', t, 100, 10, 0.00002,
                   CASE WHEN g % 1000 = 0 THEN 'model endpoint returned HTTP 400' END
              FROM generate_series(1, {HistoryJobs}) AS g
             CROSS JOIN LATERAL (SELECT now() - interval '30 days' * (1 - g::float8 / {HistoryJobs}) AS t) AS f;
            INSERT INTO llm.job (task, row_key, max_attempts) SELECT 'public.tickets:ticket_category', jsonb_build_object('id', -g), 3 FROM generate_series(1, 500) AS g;
            INSERT INTO llm.job (task, row_key, max_attempts) VALUES ('public.notes:note_summary', jsonb_build_object('id', 1), 3);
            """);
        await db.Owner.ExecAsync("VACUUM ANALYZE llm.job");

        // The console as the owner's login (auto_explain is loaded per session by a superuser), still as pgllm_console.
        var explained = new NpgsqlConnectionStringBuilder(fixture.Postgres.GetConnectionString(new NpgsqlConnectionStringBuilder(db.ConsoleConnectionString).Database!))
        {
            Options = "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0 -c auto_explain.log_format=json -c auto_explain.log_nested_statements=on",
        }.ConnectionString;
        var logStart = new FileInfo(fixture.Postgres.LogFilePath).Length;
        await using (var host = await ConsoleFixture.StartConsoleAsync(db, o => o.ConnectionString = explained))
        {
            using var http = new HttpClient { BaseAddress = host.Url };
            http.DefaultRequestHeaders.Add("Cookie", "test-user=olivia:operator");
            var task = Uri.EscapeDataString("public.tickets:ticket_category");
            string[] pages =
            [
                string.Empty, "overview/fragment", "endpoints", "dead-letters", "work", "log",
                $"jobs?task={task}", $"jobs?task={task}&state=pending", $"jobs?task={task}&state=failed", $"jobs?task={task}&state=succeeded",
                $"jobs?task={task}&key=42", $"jobs?task={task}&id=1000", $"row?task={task}&key=42",
            ];
            foreach (var page in pages)
            {
                var response = await http.GetAsync(new Uri(page, UriKind.Relative));
                Assert.True(response.StatusCode == HttpStatusCode.OK, $"{page}: {response.StatusCode}");
            }
        }

        // What auto_explain writes for a scan of the whole queue, which the check finds.
        Assert.Matches(SeqScanOfJob(), "\"Node Type\": \"Seq Scan\",\n  \"Parent Relationship\": \"Outer\",\n  \"Parallel Aware\": false,\n  \"Async Capable\": false,\n  \"Relation Name\": \"job\",");
        var log = await ReadFromAsync(fixture.Postgres.LogFilePath, logStart);
        Assert.Contains("\"Relation Name\": \"job\"", log, StringComparison.Ordinal);
        var wholeQueue = SeqScanOfJob().Matches(log).Select(m => m.Value).ToList();
        Assert.True(wholeQueue.Count == 0, "a page scanned all of llm.job:\n" + string.Join("\n", wholeQueue));
    }

    private static async Task<string> ReadFromAsync(string path, long offset)
    {
        await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        stream.Seek(offset, SeekOrigin.Begin);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }

    [GeneratedRegex(@"""Node Type"": ""Seq Scan"",[^{}]*?""Relation Name"": ""job""")]
    private static partial Regex SeqScanOfJob();
}
