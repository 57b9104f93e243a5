using Npgsql;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The daily budgets' functions (migration 0007): a budgeted claim reserves an estimate per job, the settlement
/// moves what the attempt really spent into the day's spend, the cap stops claims (jobs stay pending, attempt 0)
/// and a raised cap lets them through again; bad input is refused with one clear message.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class BudgetSqlTests
{
    private const string Task = "public.flaky:output";
    private const string Claim = "SELECT count(*) FROM llm.claim_budgeted('w1', $1, 30, NULL, NULL, 'default')";
    private readonly PgLlmFixture _fixture;

    public BudgetSqlTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task A_claim_reserves_an_estimate_the_settlement_counts_the_attempt_and_the_cap_stops_claims_until_raised()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        // 100 input and 20 output tokens cost (100 * 5 + 20 * 25) / 1e6 = 0.001.
        await sql.ExecAsync("INSERT INTO llm.model_price (model, input_per_million, output_per_million) VALUES ('*', 5, 25)");
        await sql.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 20) AS g");
        await sql.ExecAsync("SELECT llm.budget_set('endpoint', 'default', NULL, 0.005)");

        // Nothing known to estimate with: one job, reserved at zero; none more while it is in flight.
        Assert.Equal(1L, await sql.ScalarAsync<long>(Claim, 10));
        Assert.Equal("1|0|", await sql.ScalarAsync<string>("SELECT count(*) || '|' || min(tokens_before) || '|' || coalesce(min(est_cost)::text, '') FROM llm.budget_reservation"));
        Assert.Equal(0L, await sql.ScalarAsync<long>(Claim, 10));

        // Its attempt fails with usage: back to pending, and settled into today's spend at its real cost.
        await SettleRunningAsync(sql, fail: true);
        Assert.Equal(1, await sql.ScalarAsync<int>("SELECT llm.budget_settle()"));
        Assert.Equal("120|0.0010000000|1", await sql.ScalarAsync<string>(
            "SELECT tokens || '|' || cost || '|' || attempts FROM llm.budget_spend WHERE day = llm.budget_day() AND task = $1 AND endpoint = 'default'", Task));
        Assert.Equal(0L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.budget_reservation"));

        // Known now: 0.004 left at 0.001 a job affords 4 jobs, reserved at the task's average each.
        Assert.Equal(4L, await sql.ScalarAsync<long>(Claim, 10));
        Assert.Equal("4|480|0.0040000000", await sql.ScalarAsync<string>(
            "SELECT count(*) || '|' || sum(est_tokens) || '|' || sum(est_cost) FROM llm.budget_reservation"));
        Assert.Equal("true|daily cost cap 0.005 reached|0.0010000000|0.0040000000", await sql.ScalarAsync<string>(
            "SELECT waiting || '|' || reason || '|' || spent_cost || '|' || reserved_cost FROM llm.budget_state()"));
        Assert.Equal(0L, await sql.ScalarAsync<long>(Claim, 10));

        // They succeed: spent 0.005 of 0.005, nothing reserved; at the cap the rest stays pending, attempt 0.
        await SettleRunningAsync(sql, fail: false);
        Assert.Equal("true|120|600|0.0050000000|0", await sql.ScalarAsync<string>(
            "SELECT waiting || '|' || coalesce(daily_tokens, 120) || '|' || spent_tokens || '|' || spent_cost || '|' || reserved_cost FROM llm.budget_state()"));
        Assert.Equal(0L, await sql.ScalarAsync<long>(Claim, 10));
        Assert.Equal(15L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0"));
        Assert.Equal(0L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));

        // A raised cap (and a token cap beside it): 0.002 more affords 2 jobs, 240 tokens.
        await sql.ExecAsync("SELECT llm.budget_set('endpoint', 'default', 100000, 0.007)");
        Assert.Equal(2L, await sql.ScalarAsync<long>(Claim, 10));
        await SettleRunningAsync(sql, fail: false);
        Assert.Equal(0L, await sql.ScalarAsync<long>(Claim, 10));

        // A task budget near its cap: the claim keeps only what the task's remainder affords (240 tokens: 2 jobs)
        // and gives the others back unspent; at its cap the task is left out of the claim.
        await sql.ExecAsync("SELECT llm.budget_clear('endpoint', 'default')");
        await sql.ExecAsync("SELECT llm.budget_set('task', $1, 1080, NULL)", Task);
        Assert.Equal(2L, await sql.ScalarAsync<long>(Claim, 10));
        Assert.Equal("2|11|2", await sql.ScalarAsync<string>(
            "SELECT (SELECT count(*) FROM llm.job WHERE state = 'running') || '|' || (SELECT count(*) FROM llm.job WHERE state = 'pending' AND attempt = 0) " +
            "|| '|' || (SELECT count(*) FROM llm.budget_reservation)"));
        await SettleRunningAsync(sql, fail: false);
        Assert.Equal("true|daily token cap 1080 reached|1080", await sql.ScalarAsync<string>(
            "SELECT waiting || '|' || reason || '|' || spent_tokens FROM llm.budget_state()"));
        Assert.Equal(0L, await sql.ScalarAsync<long>(Claim, 10));
        Assert.Equal(0L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE state = 'failed'"));
        Assert.True(await sql.ScalarAsync<bool>("SELECT llm.budget_clear('task', $1)", Task));
        Assert.False(await sql.ScalarAsync<bool>("SELECT llm.budget_clear('task', $1)", Task));
        Assert.Equal(0L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.budget_state()"));
    }

    [Fact]
    public async Task The_first_budget_counts_what_was_spent_today_before_it_and_a_running_job_claimed_without_one()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        await sql.ExecAsync("INSERT INTO flaky (id, input) SELECT g, 'job ' || g FROM generate_series(1, 3) AS g");
        // Two jobs finished today with tokens, one running (claimed by a worker that saw no budget yet).
        await sql.ExecAsync(
            "UPDATE llm.job SET state = 'succeeded', attempt = 1, finished_at = now(), input_tokens = 100, output_tokens = 20 WHERE id IN (SELECT id FROM llm.job ORDER BY id LIMIT 2)");
        Assert.Equal(1L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.claim('w0', 1, 30)"));
        await sql.ExecAsync("SELECT llm.budget_set('task', $1, 1000, NULL)", Task);
        Assert.Equal("240|0", await sql.ScalarAsync<string>("SELECT spent_tokens || '|' || reserved_tokens FROM llm.budget_state()"));
        Assert.Equal(1L, await sql.ScalarAsync<long>("SELECT count(*) FROM llm.budget_reservation"));
        await SettleRunningAsync(sql, fail: false);
        Assert.Equal("360|0|false", await sql.ScalarAsync<string>("SELECT spent_tokens || '|' || reserved_tokens || '|' || waiting FROM llm.budget_state()"));
    }

    [Theory]
    [InlineData("SELECT llm.budget_set('table', 'x', 1, NULL)", "budget scope must be 'task' or 'endpoint', not 'table'")]
    [InlineData("SELECT llm.budget_set('endpoint', '', 1, NULL)", "budget name is empty")]
    [InlineData("SELECT llm.budget_set('endpoint', 'default', NULL, NULL)", "budget endpoint default has no cap")]
    [InlineData("SELECT llm.budget_set('endpoint', 'default', -1, NULL)", "budget endpoint default: a daily cap cannot be negative")]
    [InlineData("SELECT llm.budget_set('task', 'nope', 1, NULL)", "unknown task 'nope'")]
    public async Task Bad_input_is_refused_with_one_clear_message(string statement, string message)
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var error = await Assert.ThrowsAsync<PostgresException>(() => db.DataSource.ExecAsync(statement));
        Assert.Equal(PostgresErrorCodes.InvalidParameterValue, error.SqlState);
        Assert.StartsWith(message, error.MessageText, StringComparison.Ordinal);
        Assert.Equal(0L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.budget"));
    }

    /// <summary>Ends every running job's attempt with 100 input and 20 output tokens: a success, or a failure that retries.</summary>
    private static Task SettleRunningAsync(NpgsqlDataSource sql, bool fail) => sql.ExecAsync(fail
        ? "SELECT llm.fail(id, attempt, 'bad answer', 0, 'transient', 100, 20, 'm', false) FROM llm.job WHERE state = 'running'"
        : "UPDATE llm.job SET state = 'succeeded', finished_at = now(), locked_by = NULL, input_tokens = coalesce(input_tokens, 0) + 100, " +
          "output_tokens = coalesce(output_tokens, 0) + 20, estimated_cost = coalesce(estimated_cost, 0) + 0.001 WHERE state = 'running'");
}
