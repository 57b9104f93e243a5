using PgLlm.Tests.Integration;
using PgLlm.Tests.Operations;

namespace PgLlm.Tests.Governor;

/// <summary>The shared state's functions (migration 0005): the breaker's count and window, the probe lease, backoff, stop, resume.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class EndpointStateSqlTests
{
    private const string Fail = "SELECT llm.endpoint_failure('e', $1, 'down', 'h1', $2, 3, 30, 10, 60)";
    private readonly PgLlmFixture _fixture;

    public EndpointStateSqlTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task Consecutive_failures_open_the_breaker_one_worker_probes_at_a_time_and_failed_probes_back_off_up_to_the_cap()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        Assert.Equal("closed", await sql.ScalarAsync<string>("SELECT llm.endpoint_configure('e', 'h1')"));
        Assert.Equal("closed", await sql.ScalarAsync<string>(Fail, "outage", "w1"));
        Assert.Equal("closed", await sql.ScalarAsync<string>(Fail, "outage", "w2"));
        // A success in between starts the count again.
        Assert.Equal("closed", await sql.ScalarAsync<string>("SELECT llm.endpoint_success('e')"));
        Assert.Equal("closed", await sql.ScalarAsync<string>(Fail, "outage", "w1"));
        Assert.Equal("closed", await sql.ScalarAsync<string>(Fail, "outage", "w2"));
        Assert.Equal("open", await sql.ScalarAsync<string>(Fail, "outage", "w1"));
        Assert.Equal(10.0, await ProbeWaitAsync());

        // Not due yet: nobody probes. Due: one worker gets the lease, the other does not.
        Assert.False(await Probe("w1"));
        await sql.ExecAsync("UPDATE llm.endpoint_state SET next_probe_at = now()");
        Assert.True(await Probe("w1"));
        Assert.False(await Probe("w2"));
        Assert.False(await Probe("w1"));

        // A failure of another worker's call is no failed probe; the prober's is, and doubles the wait.
        Assert.Equal("open", await sql.ScalarAsync<string>(Fail, "outage", "w2"));
        Assert.Equal("w1", await sql.ScalarAsync<string>("SELECT probe_by FROM llm.endpoint_state"));
        Assert.Equal("open", await sql.ScalarAsync<string>(Fail, "outage", "w1"));
        Assert.Equal(20.0, await ProbeWaitAsync());
        foreach (var expected in new[] { 40.0, 60.0, 60.0 })
        {
            await sql.ExecAsync("UPDATE llm.endpoint_state SET next_probe_at = now()");
            Assert.True(await Probe("w2"));
            Assert.Equal("open", await sql.ScalarAsync<string>(Fail, "outage", "w2"));
            Assert.Equal(expected, await ProbeWaitAsync());
        }

        // A lease given back unused goes to the next worker; a success closes the endpoint.
        await sql.ExecAsync("UPDATE llm.endpoint_state SET next_probe_at = now()");
        Assert.True(await Probe("w1"));
        await sql.ExecAsync("SELECT llm.endpoint_probe_unused('e', 'w1')");
        Assert.True(await Probe("w2"));
        Assert.Equal("closed", await sql.ScalarAsync<string>("SELECT llm.endpoint_success('e')"));
        Assert.Equal("closed|0|", await sql.ScalarAsync<string>("SELECT state || '|' || failures || '|' || coalesce(probe_by, '') FROM llm.endpoint_state"));

        async Task<bool> Probe(string worker) =>
            await sql.ScalarAsync<bool?>("SELECT llm.endpoint_probe('e', $1, 30)", worker) == true;

        async Task<double> ProbeWaitAsync() =>
            await sql.ScalarAsync<double>("SELECT extract(epoch FROM next_probe_at - updated_at)::float8 FROM llm.endpoint_state");
    }

    [Fact]
    public async Task A_stop_holds_until_resumed_or_reconfigured_and_the_worker_role_may_call_every_function()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var sql = db.DataSource;
        Assert.Equal("stopped", await sql.ScalarAsync<string>(Fail, "stop", "w1"));
        // Neither outages nor successes end a stop; nor does the same configuration.
        Assert.Equal("stopped", await sql.ScalarAsync<string>(Fail, "outage", "w1"));
        Assert.Equal("stopped", await sql.ScalarAsync<string>("SELECT llm.endpoint_success('e')"));
        Assert.Equal("stopped", await sql.ScalarAsync<string>("SELECT llm.endpoint_configure('e', 'h1')"));
        Assert.Equal("closed", await sql.ScalarAsync<string>("SELECT llm.endpoint_configure('e', 'h2')"));
        Assert.Equal("resumed: configuration changed", await sql.ScalarAsync<string>("SELECT reason FROM llm.endpoint_state"));
        Assert.Equal("stopped", await sql.ScalarAsync<string>("SELECT llm.endpoint_failure('e', 'stop', 'again', 'h2', 'w1', 3, 30, 10, 60)"));
        Assert.Equal("stopped", await sql.ScalarAsync<string>("SELECT llm.endpoint_resume('e')"));
        Assert.Equal("closed|resumed by hand", await sql.ScalarAsync<string>("SELECT state || '|' || reason FROM llm.endpoint_state"));
        Assert.Null(await sql.ScalarAsync<string?>("SELECT llm.endpoint_resume('nope')"));

        Assert.True(await sql.ScalarAsync<bool>(
            "SELECT has_table_privilege('pgllm_worker', 'llm.endpoint_state', 'SELECT') AND bool_and(has_function_privilege('pgllm_worker', p.oid, 'EXECUTE')) " +
            "FROM pg_proc AS p WHERE p.pronamespace = 'llm'::regnamespace AND p.proname LIKE 'endpoint\\_%'"));
        Assert.False(await sql.ScalarAsync<bool>(
            "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc AS p WHERE p.pronamespace = 'llm'::regnamespace AND p.proname LIKE 'endpoint\\_%'"));
    }
}
