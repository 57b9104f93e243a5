using System.Diagnostics;
using Npgsql;
using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>
/// The shared rate limits' functions (migration 0006): <c>llm.endpoint_take</c> grants at most the burst plus the
/// per-minute rate in any rolling minute, in partial grants, to takers on several connections together; a debt
/// carries; <c>llm.endpoint_pause</c> holds every grant back and notifies the workers.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class SharedRateLimitSqlTests
{
    private const string Take = "SELECT granted, wait_seconds FROM llm.endpoint_take('e', $1, $2, $3, $4, $5)";
    private readonly PgLlmFixture _fixture;

    public SharedRateLimitSqlTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task Grants_in_any_rolling_minute_stay_within_the_limit_and_its_burst_whatever_the_takers_ask()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        // A new bucket starts empty: nothing yet, and the wait is for what was asked (5 at 10 a second).
        var (granted, wait) = await TakeAsync(db.DataSource, "requests", 5, 600, 15);
        Assert.Equal(0, granted);
        Assert.InRange(wait, 0.45, 0.5);

        // The clock moves by moving the bucket's past: a second later 10 have come in; asked for 40, those 10 are granted.
        await ShiftAsync(db.DataSource, 1.0);
        (granted, wait) = await TakeAsync(db.DataSource, "requests", 40, 600, 15);
        Assert.InRange(granted, 10, 11);
        Assert.InRange(wait, 1.3, 1.5);

        // Many takers, asking for anything up to 40 at random moments for five simulated minutes.
        var random = new Random(7);
        var clock = Stopwatch.StartNew();
        var shifted = 1.0;
        var grants = new List<(double At, int Granted)>();
        for (var step = 0; step < 1500; step++)
        {
            var shift = random.NextDouble() * 0.4;
            shifted += shift;
            await ShiftAsync(db.DataSource, shift);
            (granted, _) = await TakeAsync(db.DataSource, "requests", random.Next(1, 41), 600, 15);
            grants.Add((shifted + clock.Elapsed.TotalSeconds, granted));
        }

        var most = MostInAMinute(grants);
        // The bound: the burst (15) plus a minute's rate (600), well under the limit + 5 % (630); and demand beyond
        // the limit gets all of it.
        Assert.InRange(most, 590, 616);
    }

    [Fact]
    public async Task Takers_on_several_connections_share_one_budget_and_the_use_of_the_last_minute_is_shown()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        // 100 a second, 150 at most at once; full at the start.
        await TakeAsync(db.DataSource, "requests", 0, 6000, 150);
        await db.DataSource.ExecAsync("UPDATE llm.endpoint_bucket SET level = 150, updated_at = clock_timestamp()");
        var clock = Stopwatch.StartNew();
        var totals = await Task.WhenAll(Enumerable.Range(0, 4).Select(async taker =>
        {
            await using var connection = await db.DataSource.OpenConnectionAsync();
            var random = new Random(taker);
            var total = 0;
            for (var asks = 0; asks < 5000 && clock.Elapsed < TimeSpan.FromSeconds(2); asks++)
            {
                total += (await TakeAsync(connection, "requests", random.Next(1, 21), 6000, 150)).Granted;
            }

            return total;
        }));
        var elapsed = clock.Elapsed.TotalSeconds;

        var sum = totals.Sum();
        Assert.InRange(sum, 150 + (100 * elapsed * 0.8), 150 + (100 * (elapsed + 0.1)));
        Assert.All(totals, total => Assert.True(total > 0, "every taker was granted some"));
        Assert.Equal(sum, await db.DataSource.ScalarAsync<long>("SELECT used_last_minute FROM llm.endpoint_bucket_use WHERE endpoint = 'e' AND kind = 'requests'"));
        Assert.Equal(6000, await db.DataSource.ScalarAsync<int>("SELECT per_minute FROM llm.endpoint_bucket_use WHERE endpoint = 'e'"));
    }

    [Fact]
    public async Task A_pause_holds_every_grant_back_and_notifies_a_debt_carries_and_the_worker_role_may_call_both()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        await TakeAsync(sql, "tokens", 0, 6000, 150);
        await sql.ExecAsync("UPDATE llm.endpoint_bucket SET level = 150, updated_at = clock_timestamp()");

        await using var listener = await sql.OpenConnectionAsync();
        var notified = new List<string>();
        listener.Notification += (_, e) => notified.Add(e.Payload);
        await using (var listen = new NpgsqlCommand("LISTEN pgllm_endpoints", listener))
        {
            await listen.ExecuteNonQueryAsync();
        }

        var until = await sql.ScalarAsync<DateTime>("SELECT llm.endpoint_pause('e', 30)");
        Assert.True(await listener.WaitAsync(TimeSpan.FromSeconds(10)), "the pause was notified");
        Assert.Equal(["e"], notified);
        // A shorter pause does not shorten it; while it holds nothing is granted, and the wait is the pause's.
        Assert.Equal(until, await sql.ScalarAsync<DateTime>("SELECT llm.endpoint_pause('e', 1)"));
        var (granted, wait) = await TakeAsync(sql, "tokens", 100, 6000, 150);
        Assert.Equal(0, granted);
        Assert.InRange(wait, 28, 30);

        // Unpaused: 100 of 150; then a call used 500 more than it reserved: the next waits until the debt is paid.
        await sql.ExecAsync("UPDATE llm.endpoint_state SET paused_until = NULL");
        Assert.Equal(100, (await TakeAsync(sql, "tokens", 100, 6000, 150)).Granted);
        (granted, wait) = await TakeAsync(sql, "tokens", 10, 6000, 150, debt: 500);
        Assert.Equal(0, granted);
        Assert.InRange(wait, 4.5, 4.6);
        // Tokens reserved and not used come back, up to the burst.
        await TakeAsync(sql, "tokens", 0, 6000, 150, debt: -1000);
        Assert.Equal(150.0, await sql.ScalarAsync<double>("SELECT level FROM llm.endpoint_bucket WHERE kind = 'tokens'"));

        var error = await Assert.ThrowsAsync<PostgresException>(() => TakeAsync(sql, "bytes", 1, 60, 1));
        Assert.Equal(PostgresErrorCodes.InvalidParameterValue, error.SqlState);
        Assert.True(await sql.ScalarAsync<bool>(
            "SELECT has_function_privilege('pgllm_worker', 'llm.endpoint_take(text, text, integer, integer, integer, bigint)', 'EXECUTE') " +
            "AND has_function_privilege('pgllm_worker', 'llm.endpoint_pause(text, double precision)', 'EXECUTE') " +
            "AND has_table_privilege('pgllm_worker', 'llm.endpoint_bucket_use', 'SELECT')"));
    }

    /// <summary>The most grants in any window of 60 s (each window starting at a grant).</summary>
    private static int MostInAMinute(List<(double At, int Granted)> grants)
    {
        var most = 0;
        var end = 0;
        var inWindow = 0;
        for (var start = 0; start < grants.Count; start++)
        {
            while (end < grants.Count && grants[end].At < grants[start].At + 60)
            {
                inWindow += grants[end++].Granted;
            }

            most = Math.Max(most, inWindow);
            inWindow -= grants[start].Granted;
        }

        return most;
    }

    /// <summary>Moves the bucket's clock <paramref name="seconds"/> back, as if that much time had passed.</summary>
    private static Task ShiftAsync(NpgsqlDataSource sql, double seconds) => sql.ExecAsync(
        "UPDATE llm.endpoint_bucket SET updated_at = updated_at - make_interval(secs => $1), window_start = window_start - make_interval(secs => $1)", seconds);

    private static async Task<(int Granted, double Wait)> TakeAsync(NpgsqlDataSource sql, string kind, int wanted, int perMinute, int burst, long debt = 0)
    {
        await using var connection = await sql.OpenConnectionAsync();
        return await TakeAsync(connection, kind, wanted, perMinute, burst, debt);
    }

    private static async Task<(int Granted, double Wait)> TakeAsync(NpgsqlConnection connection, string kind, int wanted, int perMinute, int burst, long debt = 0)
    {
        await using var command = new NpgsqlCommand(Take, connection);
        foreach (var value in new object[] { kind, wanted, perMinute, burst, debt })
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
        }

        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return (reader.GetInt32(0), reader.GetDouble(1));
    }
}
