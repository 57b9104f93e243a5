using PgLlm.Observability;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.Operations;

/// <summary>The view llm.usage_daily: tokens per task and day, priced per model with '*' as the fallback.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class UsageTests
{
    private readonly PgLlmFixture _fixture;

    public UsageTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Usage_per_task_and_day_is_priced_by_the_tasks_model_or_the_fallback()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'input ' || i FROM generate_series(1, 4) AS i");
        await db.DataSource.ExecAsync("INSERT INTO line_items (order_id, line_no, description) VALUES (1, 1, 'a red chair'), (1, 2, 'a lamp')");
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();
        await PgLlmStatus.WritePricesAsync(db.DataSource, new Dictionary<string, PgLlmPrice>
        {
            ["*"] = new() { InputPerMillion = 1000m, OutputPerMillion = 2000m },
            ["tiny-model"] = new() { InputPerMillion = 10m, OutputPerMillion = 20m },
        });

        foreach (var (task, input, output) in new[] { ("public.flaky:output", 1000m, 2000m), ("public.line_items:category", 10m, 20m) })
        {
            var inputTokens = await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens) FROM llm.job WHERE task = $1", task);
            var outputTokens = await db.DataSource.ScalarAsync<long>("SELECT sum(output_tokens) FROM llm.job WHERE task = $1", task);
            Assert.True(inputTokens > 0);
            Assert.Equal(inputTokens, await db.DataSource.ScalarAsync<long>("SELECT input_tokens FROM llm.usage_daily WHERE task = $1 AND day = (now() AT TIME ZONE 'UTC')::date", task));
            Assert.Equal(outputTokens, await db.DataSource.ScalarAsync<long>("SELECT output_tokens FROM llm.usage_daily WHERE task = $1", task));
            Assert.Equal(
                Math.Round(((inputTokens * input) + (outputTokens * output)) / 1_000_000m, 6),
                await db.DataSource.ScalarAsync<decimal>("SELECT estimated_cost FROM llm.usage_daily WHERE task = $1", task));
        }

        Assert.Equal(4L, await db.DataSource.ScalarAsync<long>("SELECT jobs FROM llm.usage_daily WHERE task = 'public.flaky:output'"));
    }

    [Fact]
    public async Task Without_prices_the_cost_is_null_not_zero()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a')");
        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();

        Assert.Equal(1L, await db.DataSource.ScalarAsync<long>("SELECT count(*) FROM llm.usage_daily WHERE estimated_cost IS NULL"));
    }
}
