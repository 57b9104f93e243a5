using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Npgsql;
using Xunit.Abstractions;
using PgLlm.Hosting;
using PgLlm.Local;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// Daily budgets with a real worker and model endpoint: at a task's cost cap or an endpoint's token cap the drain
/// stops (spent at most one claim's worth over the cap), the rest stays pending with no attempt spent and nothing
/// failed, status and the health check say why, and a raised or cleared cap drains the rest by itself.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class BudgetTests
{
    private const string TaskName = "public.flaky:output";
    private const int Concurrency = 4;
    private const int Rows = 40;

    /// <summary>Each call reports 100 input and 20 output tokens: at 5 and 25 per million, 0.001 a job.</summary>
    private const int TokensPerJob = 120;
    private const decimal CostPerJob = 0.001m;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly PgLlmFixture _fixture;
    private readonly ITestOutputHelper _output;

    public BudgetTests(PgLlmFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    /// <summary>The most jobs one claim takes at this concurrency: the runners' slots and half as many ahead.</summary>
    private static int OneClaim => Concurrency + Concurrency / 2;

    [Fact]
    public async Task At_a_task_cost_cap_the_drain_stops_the_rest_waits_unspent_and_a_raised_cap_drains_it()
    {
        await using var model = await StartModelAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 5, 25)");
        await db.DataSource.ExecAsync($"INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, {Rows}) AS g");
        var configuration = Ops.Configuration(_fixture);
        var (setExit, set) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "set", "--task", TaskName, "--daily-cost", "0.01");
        Assert.True(setExit == 0, set);

        using var stop = new CancellationTokenSource();
        var options = Options(model);
        var worker = Task.Run(() => Ops.Worker(db.DataSource, options).RunAsync(stop.Token));
        try
        {
            await AtCapAsync(db.DataSource);
            var spent = await db.DataSource.ScalarAsync<decimal>("SELECT spent_cost FROM llm.budget_state()");
            var succeeded = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'");
            _output.WriteLine($"task cost cap 0.01: spent {spent} in {succeeded} jobs, overshoot {spent - 0.01m} (bound {CostPerJob}; one claim would be {OneClaim * CostPerJob})");
            // Reached, and overshot by at most one job's worth (a claim keeps no more of the task's jobs than its
            // remainder affords at its average); the spend is the jobs' own cost.
            Assert.InRange(spent, 0.01m, 0.01m + CostPerJob);
            Assert.Equal(spent, await db.DataSource.ScalarAsync<decimal>("SELECT sum(estimated_cost) FROM llm.job"));
            Assert.Equal(succeeded * CostPerJob, spent);
            Assert.Equal(Rows - succeeded, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0 AND input_tokens IS NULL"));
            Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
            Assert.Equal(succeeded, model.RequestCount);

            // Visible: status (text and JSON), the budget list, the health check (still healthy).
            var (_, text) = await Ops.RunAsync(configuration, db.ConnectionString, "status");
            Assert.Contains($"Budget task {TaskName}", text, StringComparison.Ordinal);
            Assert.Contains("waiting: daily cost cap 0.01 reached, resumes 00:00 UTC or when raised", text, StringComparison.Ordinal);
            var (jsonExit, json) = await Ops.RunAsync(configuration, db.ConnectionString, "status", "--json");
            Assert.Equal(0, jsonExit);
            var budget = Assert.Single(JsonDocument.Parse(json).RootElement.GetProperty("budgets").EnumerateArray());
            Assert.Equal(("task", TaskName, "waiting", spent), (budget.GetProperty("scope").GetString(), budget.GetProperty("name").GetString(),
                budget.GetProperty("state").GetString(), budget.GetProperty("spentCost").GetDecimal()));
            var (_, list) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "list");
            Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"cost {spent:0.00####} spent + 0.00 reserved of 0.01, 0.00 left"), list, StringComparison.Ordinal);
            var health = await new PgLlmHealthCheck(db.DataSource, Microsoft.Extensions.Options.Options.Create(options)).CheckHealthAsync(new HealthCheckContext());
            Assert.Equal(HealthStatus.Healthy, health.Status);
            Assert.StartsWith($"budget task {TaskName} waiting: daily cost cap 0.01 reached", health.Description, StringComparison.Ordinal);

            // Raised by the command line: the running worker drains the rest by itself.
            var (raiseExit, raised) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "set", "--task", TaskName, "--daily-cost", "1");
            Assert.True(raiseExit == 0, raised);
            await Eventually.TrueAsync(
                async () => await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'") == Rows, "the raised cap drained every job", Bound);
            Assert.Equal(Rows, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE attempt = 1"));
            Assert.Equal(Rows * CostPerJob, await db.DataSource.ScalarAsync<decimal>("SELECT spent_cost + reserved_cost FROM llm.budget_state()"));
        }
        finally
        {
            await stop.CancelAsync();
            await worker;
        }
    }

    [Fact]
    public async Task At_an_endpoint_token_cap_a_drain_ends_with_the_rest_pending_and_a_cleared_cap_drains_it()
    {
        await using var model = await StartModelAsync();
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 20) AS g");
        const long cap = 5 * TokensPerJob;
        await db.DataSource.ExecAsync($"SELECT llm.budget_set('endpoint', 'default', {cap}, NULL)");

        using (var timeout = new CancellationTokenSource(Bound))
        {
            // Drained until idle, the worker ends once what is left waits on the budget.
            await Ops.Worker(db.DataSource, Options(model)).RunUntilIdleAsync(timeout.Token);
        }

        var spent = await db.DataSource.ScalarAsync<long>("SELECT spent_tokens + reserved_tokens FROM llm.budget_state()");
        _output.WriteLine($"endpoint token cap {cap}: spent {spent}, overshoot {spent - cap} (bound {TokensPerJob})");
        // An endpoint's claim takes only what its remainder affords at the average so far: at most one job over.
        Assert.InRange(spent, cap, cap + TokensPerJob);
        Assert.Equal(spent, await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens + output_tokens) FROM llm.job"));
        var succeeded = await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded'");
        Assert.Equal(20 - succeeded, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0"));
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
        Assert.Equal("true|daily token cap 600 reached", await db.DataSource.ScalarAsync<string>("SELECT waiting || '|' || reason FROM llm.budget_state()"));

        // Cleared by SQL: the next drain takes the rest.
        Assert.True(await db.DataSource.ScalarAsync<bool>("SELECT llm.budget_clear('endpoint', 'default')"));
        using (var timeout = new CancellationTokenSource(Bound))
        {
            await Ops.Worker(db.DataSource, Options(model)).RunUntilIdleAsync(timeout.Token);
        }

        Assert.Equal(20L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'succeeded' AND attempt = 1"));
        // With no budget left, the worker claimed as without budgets: nothing reserved, nothing counted.
        Assert.Equal("0|" + spent, await db.DataSource.ScalarAsync<string>(
            "SELECT (SELECT count(*) FROM llm.budget_reservation) || '|' || (SELECT sum(tokens) FROM llm.budget_spend)"));
    }

    [Theory]
    [InlineData(2, "give either --task NAME or --endpoint NAME", "budget", "set", "--daily-cost", "1")]
    [InlineData(2, "give either --task NAME or --endpoint NAME", "budget", "set", "--task", "a", "--endpoint", "b", "--daily-cost", "1")]
    [InlineData(2, "give --daily-tokens and/or --daily-cost", "budget", "set", "--endpoint", "default")]
    [InlineData(2, "cannot be negative", "budget", "set", "--endpoint", "default", "--daily-tokens", "-5")]
    [InlineData(2, "--daily-cost", "budget", "set", "--endpoint", "default", "--daily-cost", "lots")]
    [InlineData(1, "unknown task 'nope'. Known tasks: ", "budget", "set", "--task", "nope", "--daily-cost", "1")]
    [InlineData(1, "there is no budget of endpoint 'nope'", "budget", "clear", "--endpoint", "nope")]
    public async Task Bad_budget_input_is_one_error_line_and_a_non_zero_exit(int exit, string message, params string[] args)
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var (code, output) = await Ops.RunAsync(Ops.Configuration(_fixture), db.ConnectionString, args);
        Assert.Equal(exit, code);
        var line = Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), l => l.StartsWith("error: ", StringComparison.Ordinal));
        Assert.Contains(message, line, StringComparison.Ordinal);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.budget"));
    }

    [Fact]
    public async Task Setting_a_budget_that_would_count_nothing_says_so_and_list_and_clear_work()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("SELECT llm.endpoint_configure('default', 'h')");
        var configuration = Ops.Configuration(_fixture);
        var (exit, output) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "set", "--endpoint", "typo", "--daily-cost", "2.5");
        Assert.Equal(0, exit);
        Assert.Contains("Budget of endpoint typo set: at most cost 2.50 per UTC day.", output, StringComparison.Ordinal);
        Assert.Contains("no worker has registered an endpoint 'typo' yet (known: default)", output, StringComparison.Ordinal);
        Assert.Contains("no prices in llm.model_price yet", output, StringComparison.Ordinal);
        var (_, list) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "list");
        Assert.Contains("Budget endpoint typo (", list, StringComparison.Ordinal);
        Assert.Contains("cost 0.00 spent + 0.00 reserved of 2.50, 2.50 left: open", list, StringComparison.Ordinal);
        var (clearExit, cleared) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "clear", "--endpoint", "typo");
        Assert.Equal(0, clearExit);
        Assert.Contains("Budget of endpoint typo cleared", cleared, StringComparison.Ordinal);
        var (_, none) = await Ops.RunAsync(configuration, db.ConnectionString, "budget", "list");
        Assert.Contains("No budget is set", none, StringComparison.Ordinal);
    }

    private static async Task<LocalModelServer> StartModelAsync()
    {
        var model = await LocalModelServer.StartAsync();
        model.Responder = request => ModelReply.Raw(200, JsonSerializer.Serialize(new
        {
            id = "chatcmpl-budget",
            @object = "chat.completion",
            created = 1_767_225_600,
            model = "test-model",
            choices = new[] { new { index = 0, message = new { role = "assistant", content = $"{{\"output\": \"echo of {request.UserText}\"}}" }, finish_reason = "stop" } },
            usage = new { prompt_tokens = 100, completion_tokens = 20, total_tokens = 120 },
        }));
        return model;
    }

    private static PgLlmOptions Options(LocalModelServer model)
    {
        var options = TestOptions.For(model, Concurrency);
        options.Governor.RefreshInterval = TimeSpan.FromMilliseconds(200);
        return options;
    }

    /// <summary>
    /// Waits until the budget waits at its cap with nothing in flight, and stays so for a few of the worker's refresh
    /// intervals and poll intervals (its lanes had the chance to claim again and took nothing).
    /// </summary>
    private static async Task AtCapAsync(NpgsqlDataSource db)
    {
        const string atCap = "SELECT (SELECT bool_and(waiting) FROM llm.budget_state()) AND NOT EXISTS (SELECT 1 FROM llm.job WHERE state = 'running')";
        await Eventually.TrueAsync(async () => await db.ScalarAsync<bool?>(atCap) == true, "the budget waits at its cap with nothing running", Bound);
        // Polled 15 times 100 ms apart: several of the worker's 200 ms refreshes and 500 ms polls.
        for (var poll = 0; poll < 15; poll++)
        {
            Assert.True(await db.ScalarAsync<bool?>(atCap) == true, "the worker claimed past the cap");
            await Task.Delay(TimeSpan.FromMilliseconds(100));
        }
    }
}
