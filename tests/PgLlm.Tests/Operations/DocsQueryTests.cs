using Npgsql;
using PgLlm.Tests.Integration;
using Xunit.Abstractions;

namespace PgLlm.Tests.Operations;

/// <summary>
/// The KEDA query of docs/operations.md ("Scaling on queue depth"), read from the doc itself: the <c>query:</c> line
/// of its YAML, run as the read-only role its SQL block creates, against a queue with jobs in every state, counts
/// exactly the pending jobs that are due, and reads them from the index of pending jobs, not from the whole table.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class DocsQueryTests
{
    private const string Section = "### Scaling on queue depth";
    private const string DocRole = "pgllm_keda";
    private const int Due = 300;
    private readonly PgLlmFixture _fixture;
    private readonly ITestOutputHelper _output;

    public DocsQueryTests(PgLlmFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    [Fact]
    public async Task The_documented_KEDA_query_counts_exactly_the_due_pending_jobs_from_the_ready_index_as_the_documented_role()
    {
        var section = ReadSection();
        var query = QueryLine(Block(section, "yaml", "query:"));
        Assert.Equal(query, Block(section, "sql", "count(*)").Trim());
        var grants = Block(section, "sql", "CREATE ROLE");

        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await FillQueueAsync(db);
        var role = $"{DocRole}_{Guid.NewGuid():N}"[..24];
        await db.DataSource.ExecAsync(grants.Replace(DocRole, role, StringComparison.Ordinal));
        try
        {
            await using (var scaler = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(db.ConnectionString) { Username = role }.ConnectionString))
            {
                Assert.Equal((long)Due, await scaler.ScalarAsync<long>(query));

                // A large finished history, few pending jobs: the planner is free to choose, and must not need the table.
                var plan = string.Join("\n", await scaler.ListAsync<string>("EXPLAIN " + query));
                _output.WriteLine(plan);
                Assert.Contains("job_ready", plan, StringComparison.Ordinal);
                Assert.DoesNotContain("Seq Scan", plan, StringComparison.Ordinal);
            }
        }
        finally
        {
            await db.DataSource.ExecAsync($"DROP OWNED BY {role}; DROP ROLE {role}");
        }
    }

    /// <summary>Jobs in every state: due pending, pending due later (a retry's backoff), running, succeeded history, failed.</summary>
    private static async Task FillQueueAsync(TestDatabase db)
    {
        static string Jobs(string state, int attempt, string scheduledAt, string lockedByAndLease, string finishedAt, int from, int to) =>
            "INSERT INTO llm.job (task, row_key, state, attempt, max_attempts, scheduled_at, locked_by, lease_until, finished_at) " +
            $"SELECT 'public.flaky:output', jsonb_build_object('id', g), '{state}', {attempt}, 3, {scheduledAt}, {lockedByAndLease}, {finishedAt} " +
            $"FROM generate_series({from}, {to}) AS g";

        await db.DataSource.ExecAsync(string.Join(";\n",
            Jobs("pending", 0, "now() - interval '1 minute'", "NULL, NULL", "NULL", 1, Due),
            Jobs("pending", 1, "now() + interval '1 hour'", "NULL, NULL", "NULL", 1001, 1200),
            Jobs("running", 1, "now() - interval '1 minute'", "'w1', now() + interval '5 minutes'", "NULL", 2001, 2100),
            Jobs("succeeded", 1, "now() - interval '1 day'", "NULL, NULL", "now()", 10001, 30000),
            Jobs("failed", 3, "now() - interval '1 day'", "NULL, NULL", "now()", 40001, 40050),
            "ANALYZE llm.job"));
    }

    /// <summary>The section of docs/operations.md, up to the next heading of level 2.</summary>
    private static string ReadSection()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "PgLlm.sln")))
        {
            directory = directory.Parent;
        }

        Assert.NotNull(directory);
        var doc = File.ReadAllText(Path.Combine(directory.FullName, "docs", "operations.md"));
        var start = doc.IndexOf(Section + "\n", StringComparison.Ordinal);
        Assert.True(start >= 0, $"docs/operations.md has no '{Section}'");
        var end = doc.IndexOf("\n## ", start, StringComparison.Ordinal);
        return end < 0 ? doc[start..] : doc[start..end];
    }

    /// <summary>The first fenced block of <paramref name="language"/> in the section that contains <paramref name="containing"/>.</summary>
    private static string Block(string section, string language, string containing)
    {
        var blocks = section.Split("```" + language + "\n").Skip(1).Select(b => b[..b.IndexOf("```", StringComparison.Ordinal)]);
        var block = blocks.FirstOrDefault(b => b.Contains(containing, StringComparison.Ordinal));
        Assert.True(block is not null, $"no ```{language} block with '{containing}' in '{Section}'");
        return block;
    }

    /// <summary>The value of the YAML's <c>query:</c> line, without its quotes.</summary>
    private static string QueryLine(string yaml)
    {
        var line = yaml.Split('\n').Select(l => l.Trim()).Single(l => l.StartsWith("query:", StringComparison.Ordinal));
        return line["query:".Length..].Trim().Trim('"');
    }
}
