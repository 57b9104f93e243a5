using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Migrations;
using PgLlm.Planning;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Planning;

/// <summary>
/// <c>pgllm plan</c> and the migration's output: a changed definition makes the rows an older one wrote stale; the plan
/// counts exactly those, and its token estimate is within 20% of what re-running them then spends against the local
/// model (whose usage is its text's characters / 4: system and user messages in, the answer out).
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed partial class PlanTests
{
    internal const string Flaky = "public.flaky:output";

    /// <summary>Much longer than the declared "Echo {input}": the old prompts' tokens say little of the new ones'.</summary>
    internal const string LongPrompt =
        "Read the text below carefully and repeat it back exactly as it is written, with no comment of your own and nothing left out. The text follows: {input}";

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;
    private readonly Xunit.Abstractions.ITestOutputHelper _output;

    public PlanTests(PgLlmFixture fixture, Xunit.Abstractions.ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_new_prompt_is_planned_from_its_length_within_20_percent_of_what_the_rerun_spends()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var oldHash = await SeedAsync(_fixture, db.DataSource, rows: 30, neverFilled: 2);
        await ChangeDefinitionAsync(db.DataSource, LongPrompt, "long-prompt");

        var plan = Assert.Single(await PlanEstimator.ReadAsync(db.DataSource, Ops.Options(_fixture), Flaky));

        // Exactly the rows the old definition wrote are stale.
        Assert.Equal(30, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.row_version WHERE task = '{Flaky}' AND definition_hash = '{oldHash}'"));
        Assert.Equal(new TaskRowCounts(32, 0, 30, 2), plan.Rows);
        Assert.Equal(30, plan.Rerun.Rows);
        Assert.Equal(TokenEstimateSource.PromptLengthWithHistoryRatio, plan.Rerun.InputSource);
        Assert.Equal(30, plan.Rerun.HistoryJobs);
        Assert.Equal(TokenEstimateSource.AnyHistory, plan.Rerun.OutputSource);
        Assert.Null(plan.Rerun.EstimatedCost);
        Assert.Equal(DurationSource.MeasuredLatency, plan.Rerun.DurationSource);
        var oldAverage = await db.DataSource.ScalarAsync<double>($"SELECT avg(input_tokens)::float8 FROM llm.job WHERE task = '{Flaky}'");

        var (input, output) = await RerunStaleAsync(db.DataSource, "long-prompt");

        AssertWithin20Percent(input, plan.Rerun.InputTokens, "input tokens");
        AssertWithin20Percent(output, plan.Rerun.OutputTokens, "output tokens");
        // The old definition's average alone would have been far off: the estimate had to render the new prompt.
        Assert.True(Math.Abs((oldAverage * 30) - input) > 0.2 * input, $"the old prompts' tokens ({oldAverage * 30}) are near the new ones' ({input})");
        var after = Assert.Single(await PlanEstimator.ReadAsync(db.DataSource, null, Flaky));
        Assert.Equal(new TaskRowCounts(32, 30, 0, 2), after.Rows);
        Assert.Equal(0, after.Rerun.InputTokens);
    }

    [Fact]
    public async Task With_answers_under_the_new_definition_the_plan_uses_them_and_prices_and_limits_the_rerun()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await SeedAsync(_fixture, db.DataSource, rows: 30, neverFilled: 0);
        await ChangeDefinitionAsync(db.DataSource, LongPrompt, "long-prompt");
        // Five rows change, and are answered under the new definition.
        await db.DataSource.ExecAsync("UPDATE flaky SET input = replace(input, 'row', 'ROW') WHERE id <= 5");
        await DrainAsync(_fixture, db.DataSource);
        var options = Ops.Options(_fixture, o =>
        {
            o.Prices["*"] = new PgLlmPrice { InputPerMillion = 1000, OutputPerMillion = 2000 };
            o.RateLimit.RequestsPerMinute = 10;
        });

        var plan = Assert.Single(await PlanEstimator.ReadAsync(db.DataSource, options, Flaky));

        Assert.Equal(new TaskRowCounts(30, 5, 25, 0), plan.Rows);
        Assert.Equal(TokenEstimateSource.CurrentHistory, plan.Rerun.InputSource);
        Assert.Equal(TokenEstimateSource.CurrentHistory, plan.Rerun.OutputSource);
        Assert.Equal(5, plan.Rerun.HistoryJobs);
        Assert.Equal(((plan.Rerun.InputTokens * 1000m) + (plan.Rerun.OutputTokens * 2000m)) / 1_000_000m, plan.Rerun.EstimatedCost);
        // 25 requests at 10 a minute.
        Assert.Equal(DurationSource.EndpointLimits, plan.Rerun.DurationSource);
        Assert.Equal(TimeSpan.FromMinutes(2.5), plan.Rerun.Duration);
        Assert.Equal("10 requests/min", plan.Rerun.DurationBasis);

        var (input, output) = await RerunStaleAsync(db.DataSource, "long-prompt", skip: 5);

        AssertWithin20Percent(input, plan.Rerun.InputTokens, "input tokens");
        AssertWithin20Percent(output, plan.Rerun.OutputTokens, "output tokens");
    }

    [Fact]
    public async Task A_migration_that_changes_a_prompt_says_what_it_leaves_stale_in_the_log_and_from_pgllm_migrate()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await SeedAsync(_fixture, db.DataSource, rows: 4, neverFilled: 1);
        var logger = new LinesLogger();

        var result = await new PgLlmMigrator(db.DataSource, ChangedScripts("Echo twice: {input}"), logger).MigrateAsync();

        var line = Assert.Single(result.DefinitionChanges);
        Assert.Matches(ChangeLine(), line);
        Assert.Contains(line, logger.Lines);
        Assert.Equal("Echo twice: {input}", await db.DataSource.ScalarAsync<string>($"SELECT prompt FROM llm.task WHERE name = '{Flaky}'"));

        // The same from the command line, and nothing when no definition changes.
        using var writer = new SynchronizedWriter();
        var console = PgLlm.Tests.CommandLine.CliConsoles.Create(writer, width: 80, terminal: false);
        var commandLine = new PgLlm.Cli.PgLlmCommandLine(ChangedScripts("Echo thrice: {input}"), console, Ops.Configuration(_fixture));
        Assert.Equal(0, await commandLine.InvokeAsync(["migrate", "--connection", db.ConnectionString]));
        var printed = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Matches(ChangeLine(), Assert.Single(printed, l => l.StartsWith(Flaky, StringComparison.Ordinal)));
        var (again, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "migrate");
        Assert.Equal(0, again);
        Assert.Contains("definition changed", output, StringComparison.Ordinal);
        var (upToDate, quiet) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "migrate");
        Assert.Equal(0, upToDate);
        Assert.DoesNotContain("definition changed", quiet, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Edited_cells_are_what_llm_edited_cells_counts_and_not_counted_without_it()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        if (!await db.DataSource.ScalarAsync<bool>("SELECT to_regprocedure('llm.edited_cells(text)') IS NOT NULL"))
        {
            Assert.Null(Assert.Single(await PlanEstimator.ReadAsync(db.DataSource, null, Flaky)).EditedCells);
        }

        // A stand-in with the signature of the edited-cells step's function.
        await db.DataSource.ExecAsync(
            $"CREATE OR REPLACE FUNCTION llm.edited_cells(p_task text) RETURNS bigint LANGUAGE sql AS $$ SELECT CASE WHEN p_task = '{Flaky}' THEN 7 ELSE 0 END::bigint $$");

        Assert.Equal(7, Assert.Single(await PlanEstimator.ReadAsync(db.DataSource, null, Flaky)).EditedCells);
    }

    /// <summary>Rows 1..<paramref name="rows"/> answered by the declared definition, and rows never filled; the declared hash.</summary>
    internal static async Task<string> SeedAsync(PgLlmFixture fixture, NpgsqlDataSource db, int rows, int neverFilled)
    {
        // Inputs of 60 to 200 characters, no ": " in them (the local model answers with the text after the last one).
        await db.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'row ' || g || ' ' || repeat('lorem ipsum dolor ', 3 + g % 8) FROM generate_series(1, {rows}) AS g");
        await DrainAsync(fixture, db);
        await db.ExecAsync($"INSERT INTO flaky (id, input) SELECT 1000 + g, 'never filled ' || g FROM generate_series(1, {neverFilled}) AS g; " +
                           "DELETE FROM llm.job WHERE state = 'pending'");
        return await db.ScalarAsync<string>($"SELECT definition_hash FROM llm.task WHERE name = '{Flaky}'");
    }

    /// <summary>A new definition, as a migration registers it (llm.task_definition keeps the old one).</summary>
    internal static Task ChangeDefinitionAsync(NpgsqlDataSource db, string prompt, string hash) =>
        db.ExecAsync($"UPDATE llm.task SET prompt = '{prompt}', definition_hash = '{hash}' WHERE name = '{Flaky}'");

    internal static async Task DrainAsync(PgLlmFixture fixture, NpgsqlDataSource db)
    {
        using var timeout = new CancellationTokenSource(Bound);
        await fixture.CreateWorker(db).RunUntilIdleAsync(timeout.Token);
    }

    /// <summary>Enqueues a job per stale row, as a re-run would, drains them; the tokens they spent.</summary>
    private async Task<(long Input, long Output)> RerunStaleAsync(NpgsqlDataSource db, string hash, int skip = 0)
    {
        await db.ExecAsync($"INSERT INTO llm.job (task, row_key, max_attempts) SELECT '{Flaky}', row_key, 3 FROM llm.plan_rows('{Flaky}', 'stale')");
        await DrainAsync(_fixture, db);
        Assert.Equal(0, await db.ScalarAsync<long>($"SELECT count(*) FROM llm.job WHERE task = '{Flaky}' AND state <> 'succeeded'"));
        var spent = await db.ListAsync<long>(
            $"SELECT sum(input_tokens) FROM llm.job WHERE task_hash = '{hash}' AND id NOT IN (SELECT id FROM llm.job WHERE task_hash = '{hash}' ORDER BY id LIMIT {skip}) " +
            $"UNION ALL SELECT sum(output_tokens) FROM llm.job WHERE task_hash = '{hash}' AND id NOT IN (SELECT id FROM llm.job WHERE task_hash = '{hash}' ORDER BY id LIMIT {skip})");
        return (spent[0], spent[1]);
    }

    private void AssertWithin20Percent(long actual, long estimate, string what)
    {
        _output.WriteLine($"{what}: estimated {estimate}, spent {actual} ({(estimate - actual) * 100.0 / actual:+0.0;-0.0}%)");
        Assert.True(actual > 0 && Math.Abs(estimate - actual) <= 0.2 * actual, $"{what}: estimated {estimate}, spent {actual}");
    }

    /// <summary>The test scripts with the flaky task's prompt changed, as a second declaration of the same table generates it.</summary>
    private static List<PgLlmScript> ChangedScripts(string prompt) => PgLlmFixture.Scripts.Select(s =>
        !s.Sql.Contains($"'{Flaky}'", StringComparison.Ordinal) ? s
        : s with
        {
            Hash = s.Hash + "-" + prompt.Length,
            Sql = DefinitionHash().Replace(s.Sql.Replace("prompt => 'Echo {input}'", $"prompt => '{prompt}'", StringComparison.Ordinal), $"definition_hash => 'changed-{prompt.Length}'"),
        }).ToList();

    [GeneratedRegex(@"definition_hash => '[0-9a-f]+'")]
    private static partial Regex DefinitionHash();

    [GeneratedRegex(@"^public\.flaky:output: definition changed \([^)]+ -> changed-\d+\): \d+ rows stale, 0 current, 1 never filled; re-running the stale rows: ~[\d,]+ input \+ ~[\d,]+ output tokens, no prices, ~\d+s; run `pgllm plan` / `pgllm rerun`$")]
    private static partial Regex ChangeLine();

    /// <summary>Keeps every message logged, for the migration's lines.</summary>
    private sealed class LinesLogger : ILogger<PgLlmMigrator>
    {
        public List<string> Lines { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Lines)
            {
                Lines.Add(formatter(state, exception));
            }
        }
    }
}
