using System.Text.Json;
using Npgsql;
using PgLlm.Cli;
using PgLlm.Local;
using PgLlm.Tests.CommandLine;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Planning;

/// <summary>
/// <c>pgllm compare</c> runs the current definition on a sample of stale rows and reports how often the new answer
/// equals the old, without writing a row (the task's table, <c>llm.job</c> and <c>llm.row_version</c> are as they
/// were); the answers stay in <c>llm.compare_sample</c>. And <c>plan</c> and <c>compare</c> at 80 columns, as JSON,
/// and their bad input (one line on stderr, exit 2).
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class CompareTests
{
    private const string Flaky = PlanTests.Flaky;
    private readonly PgLlmFixture _fixture;

    public CompareTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Compare_reports_agreement_on_a_sample_without_writing_a_row_and_keeps_its_answers()
    {
        await using var db = await SeedComparedAsync();
        var before = await SnapshotAsync(db.DataSource);

        var (exit, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "compare", "--task", Flaky, "--sample", "10", "--json");

        Assert.Equal(0, exit);
        Assert.Equal(before, await SnapshotAsync(db.DataSource));
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        var runId = root.GetProperty("runId").GetInt64();
        Assert.Equal("repeat", root.GetProperty("definitionHash").GetString());
        Assert.Equal(6, root.GetProperty("sampled").GetInt32());
        Assert.Equal(1, root.GetProperty("invalid").GetInt32());
        Assert.Equal(0, root.GetProperty("failed").GetInt32());
        Assert.Equal(Math.Round(1 / 6.0, 4), root.GetProperty("invalidRate").GetDouble());
        var target = Assert.Single(root.GetProperty("targets").EnumerateArray());
        Assert.Equal("output", target.GetProperty("target").GetString());
        Assert.False(target.GetProperty("exact").GetBoolean());
        Assert.Equal(5, target.GetProperty("compared").GetInt32());
        Assert.Equal(3, target.GetProperty("equal").GetInt32());
        // Two answers gained "changed " (8 edits over 18 characters): (3 + 2 * (1 - 8/18)) / 5.
        Assert.Equal(Math.Round((3 + (2 * (1 - (8 / 18.0)))) / 5, 4), target.GetProperty("agreement").GetDouble(), 3);
        var spent = await db.DataSource.ScalarAsync<long>($"SELECT sum(input_tokens) FROM llm.compare_sample WHERE run_id = {runId}");
        Assert.True(spent > 0);
        Assert.Equal(spent, root.GetProperty("inputTokens").GetInt64());

        // Every answer is kept: the old value beside the new one, the invalid answer (no new value, no agreement) with its error.
        Assert.Equal(
            [
                "{\"id\": 1}|same one|same one|1|t", "{\"id\": 2}|same two|same two|1|t", "{\"id\": 3}|same three|same three|1|t",
                "{\"id\": 4}|other four|changed other four|0.5556|t", "{\"id\": 5}|other five|changed other five|0.5556|t", "{\"id\": 6}|broken six|f",
            ],
            await db.DataSource.ListAsync<string>(
                "SELECT concat_ws('|', row_key::text, old_answer->>'output', new_answer->>'output', agreement->>'output', valid) " +
                $"FROM llm.compare_sample WHERE run_id = {runId} AND task = '{Flaky}' ORDER BY row_key"));
        Assert.NotNull(await db.DataSource.ScalarAsync<string>($"SELECT error FROM llm.compare_sample WHERE run_id = {runId} AND NOT valid"));
    }

    [Fact]
    public async Task Compare_at_80_columns_says_per_target_how_often_the_answer_is_the_same_and_where_the_answers_are()
    {
        await using var db = await SeedComparedAsync();
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: true);

        var exit = await Ops.RunAsync(console, Ops.Configuration(_fixture), db.ConnectionString, "compare", "--task", Flaky, "--sample", "4");

        Assert.Equal(0, exit);
        var lines = CliConsoles.VisibleLines(writer.ToString());
        Assert.All(lines, line => Assert.True(line.Length <= 80, $"wider than 80 columns: '{line}'"));
        var runId = await db.DataSource.ScalarAsync<long>("SELECT max(run_id) FROM llm.compare_sample");
        Assert.Contains($"public.flaky:output: 4 stale rows under the current definition", lines);
        Assert.Contains(lines, l => l.StartsWith($"  run            {runId} (definition repeat)", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("  output         0.89 similar, 3 of 4 equal", StringComparison.Ordinal));
        Assert.Contains("  invalid        0 of 4 answers (0%)", lines);
        Assert.Contains($"  SELECT * FROM llm.compare_sample WHERE run_id = {runId};", lines);
        Assert.Contains("  " + PgLlm.Planning.AnswerAgreement.TextMeasure + ".", lines);
        Assert.Equal(4, await db.DataSource.ScalarAsync<long>($"SELECT count(*) FROM llm.compare_sample WHERE run_id = {runId}"));
    }

    [Fact]
    public async Task Plan_at_80_columns_and_as_json_gives_the_rows_and_the_estimate()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await PlanTests.SeedAsync(_fixture, db.DataSource, rows: 12, neverFilled: 3);
        await PlanTests.ChangeDefinitionAsync(db.DataSource, PlanTests.LongPrompt, "long-prompt");
        // Two rows of a composite key holding values no version names (filled by hand), of a task with no history.
        await db.DataSource.ExecAsync(
            "INSERT INTO line_items (order_id, line_no, description, category) VALUES (1, 1, 'a pen', 'office'), (1, 2, 'a standing desk', 'furniture')");
        using var writer = new SynchronizedWriter();
        var console = CliConsoles.Create(writer, width: 80, terminal: true);

        var exit = await Ops.RunAsync(console, Ops.Configuration(_fixture), db.ConnectionString, "plan", "--task", Flaky);
        var (jsonExit, jsonOutput) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, "plan", "--json");

        Assert.Equal(0, exit);
        var lines = CliConsoles.VisibleLines(writer.ToString());
        Assert.All(lines, line => Assert.True(line.Length <= 80, $"wider than 80 columns: '{line}'"));
        Assert.Equal(Flaky, lines[0]);
        Assert.Contains("  rows           15: 0 current, 12 stale, 3 never filled", lines);
        // "not counted" until the queue has llm.edited_cells (edited cells, another queue step), then the count.
        Assert.Contains(lines, l => l is "  edited cells   not counted (needs edited cells)" or "  edited cells   0");
        Assert.Contains("  re-run stale   12 rows", lines);
        Assert.Contains(lines, l => l.StartsWith("  input tokens   ~", StringComparison.Ordinal) && l.Contains("prompt length", StringComparison.Ordinal));
        Assert.Contains("  cost           no prices (PgLlm:Prices or llm.model_price)", lines);
        Assert.Contains(lines, l => l.StartsWith("  time           ~", StringComparison.Ordinal));

        Assert.Equal(0, jsonExit);
        using var json = JsonDocument.Parse(jsonOutput);
        var tasks = json.RootElement.GetProperty("tasks").EnumerateArray().ToList();
        Assert.Equal(await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.task"), tasks.Count);
        var flaky = tasks.Single(t => t.GetProperty("task").GetString() == Flaky);
        Assert.Equal("long-prompt", flaky.GetProperty("definitionHash").GetString());
        Assert.Equal(12, flaky.GetProperty("rows").GetProperty("stale").GetInt64());
        Assert.Equal(3, flaky.GetProperty("rows").GetProperty("neverFilled").GetInt64());
        Assert.True(flaky.GetProperty("editedCells").ValueKind is JsonValueKind.Null or JsonValueKind.Number);
        var rerun = flaky.GetProperty("rerun");
        Assert.Equal(12, rerun.GetProperty("rows").GetInt64());
        Assert.Equal("promptLengthWithHistoryRatio", rerun.GetProperty("inputTokensFrom").GetString());
        Assert.True(rerun.GetProperty("inputTokens").GetInt64() > 0);
        Assert.Equal(JsonValueKind.Null, rerun.GetProperty("estimatedCost").ValueKind);
        Assert.Equal("measuredLatency", rerun.GetProperty("timeFrom").GetString());

        // No history at all: the prompt's length (system prompt and rendered template) at 4 characters a token.
        var items = tasks.Single(t => t.GetProperty("task").GetString() == "public.line_items:category").GetProperty("rerun");
        var prompt = await db.DataSource.ScalarAsync<string>("SELECT prompt FROM llm.task WHERE name = 'public.line_items:category'");
        var system = await db.DataSource.ScalarAsync<string>("SELECT system_prompt FROM llm.task WHERE name = 'public.line_items:category'");
        List<string> descriptions = ["a pen", "a standing desk"];
        var characters = descriptions.Sum(d => system.Length + prompt.Replace("{description}", d, StringComparison.Ordinal).Length);
        Assert.Equal(2, items.GetProperty("rows").GetInt64());
        Assert.Equal("promptLengthDefaultRatio", items.GetProperty("inputTokensFrom").GetString());
        Assert.Equal((long)Math.Round(characters / 4.0), items.GetProperty("inputTokens").GetInt64());
        Assert.Equal("schemaGuess", items.GetProperty("outputTokensFrom").GetString());
        Assert.Equal("unknown", items.GetProperty("timeFrom").GetString());
    }

    [Theory]
    [InlineData("unknown task, plan", "plan", "--task", "public.nope:x")]
    [InlineData("unknown task, compare", "compare", "--task", "public.nope:x")]
    [InlineData("sample below 1", "compare", "--task", Flaky, "--sample", "0")]
    public async Task Bad_input_is_one_line_on_stderr_and_exit_2(string what, params string[] args)
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        using var output = new SynchronizedWriter();
        using var errors = new SynchronizedWriter();
        var commandLine = new PgLlmCommandLine(PgLlmFixture.Scripts, CliConsoles.Create(output, width: 80, terminal: false), Ops.Configuration(_fixture), errors);

        var exit = await commandLine.InvokeAsync([.. args, "--connection", db.ConnectionString]);

        Assert.True(exit == 2, $"{what}: exit {exit}");
        Assert.Equal(string.Empty, output.ToString());
        var line = Assert.Single(errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith(args.Contains("0") ? "error: --sample must be at least 1." : "error: unknown task 'public.nope:x'. Known tasks: ", line, StringComparison.Ordinal);
        Assert.Equal(0, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.compare_sample"));
    }

    [Fact]
    public async Task Compare_does_not_call_an_endpoint_the_governor_stopped()
    {
        await using var db = await SeedComparedAsync();
        var calls = _fixture.Model.RequestCount;
        await db.DataSource.ExecAsync("INSERT INTO llm.endpoint_state (endpoint, state, reason) VALUES ('default', 'stopped', 'HTTP 401: wrong key') ON CONFLICT (endpoint) DO UPDATE SET state = 'stopped', reason = excluded.reason");
        using var output = new SynchronizedWriter();
        using var errors = new SynchronizedWriter();
        var commandLine = new PgLlmCommandLine(PgLlmFixture.Scripts, CliConsoles.Create(output, width: 80, terminal: false), Ops.Configuration(_fixture), errors);

        var exit = await commandLine.InvokeAsync(["compare", "--task", Flaky, "--connection", db.ConnectionString]);

        Assert.Equal(1, exit);
        Assert.Equal(
            "error: endpoint default is stopped (HTTP 401: wrong key): fix it, then run 'pgllm endpoint resume default' and compare again.",
            Assert.Single(errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        Assert.Equal(calls, _fixture.Model.RequestCount);
        Assert.Equal(0, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.compare_sample"));
    }

    [Fact]
    public async Task Compare_whose_every_call_fails_prints_its_report_then_one_error_line_and_exits_1()
    {
        await using var db = await SeedComparedAsync();
        _fixture.Model.Responder = _ => ModelReply.Error(500, "the model is down");
        using var output = new SynchronizedWriter();
        using var errors = new SynchronizedWriter();
        var commandLine = new PgLlmCommandLine(PgLlmFixture.Scripts, CliConsoles.Create(output, width: 80, terminal: false), Ops.Configuration(_fixture), errors);

        var exit = await commandLine.InvokeAsync(["compare", "--task", Flaky, "--sample", "2", "--connection", db.ConnectionString]);

        Assert.Equal(1, exit);
        Assert.Contains("  failed calls   2", output.ToString(), StringComparison.Ordinal);
        var line = Assert.Single(errors.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: every call failed, the first with: model endpoint returned HTTP 500", line, StringComparison.Ordinal);
        Assert.Equal(2, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.compare_sample WHERE NOT valid AND error IS NOT NULL"));
    }

    /// <summary>
    /// Six rows answered by "Echo {input}" (the answer: the input), then a new definition "Repeat: {input}" whose answers
    /// are the same for "same ..." rows, "changed ..." for "other ..." rows, and invalid for the "broken" row.
    /// </summary>
    private async Task<TestDatabase> SeedComparedAsync()
    {
        var db = await Ops.CreateDatabaseAsync(_fixture);
        _fixture.Model.Responder = request => request.UserText switch
        {
            var text when text.StartsWith("Echo ", StringComparison.Ordinal) => Answer(text["Echo ".Length..]),
            var text when text.Contains("broken", StringComparison.Ordinal) => ModelReply.Json("{\"nope\": 1}"),
            var text when text.Contains("other", StringComparison.Ordinal) => Answer("changed " + text["Repeat: ".Length..]),
            var text => Answer(text["Repeat: ".Length..]),
        };
        await db.DataSource.ExecAsync(
            "INSERT INTO flaky (id, input) VALUES (1, 'same one'), (2, 'same two'), (3, 'same three'), (4, 'other four'), (5, 'other five'), (6, 'broken six')");
        await PlanTests.DrainAsync(_fixture, db.DataSource);
        await PlanTests.ChangeDefinitionAsync(db.DataSource, "Repeat: {input}", "repeat");
        return db;
    }

    private static ModelReply Answer(string output) => ModelReply.Json(JsonSerializer.Serialize(new { output }));

    /// <summary>Everything a comparison must leave as it was: the rows, the jobs, the rows' versions.</summary>
    private static async Task<string> SnapshotAsync(NpgsqlDataSource db) => string.Join('\n',
        await db.ScalarAsync<string>("SELECT string_agg(id || '=' || coalesce(output, '-'), ',' ORDER BY id) FROM flaky"),
        await db.ScalarAsync<string>("SELECT string_agg(concat_ws('|', id, task, row_key, state, attempt, answer, input_tokens, task_hash), ',' ORDER BY id) FROM llm.job"),
        await db.ScalarAsync<string>("SELECT string_agg(concat_ws('|', task, row_key, definition_hash, written_at, job_id), ',' ORDER BY task, row_key) FROM llm.row_version"));
}
