using Npgsql;
using PgLlm.Generated;
using PgLlm.Migrations;
using PgLlm.Queue;
using PgLlm.Tests.Integration;

namespace PgLlm.Tests.SchemaCheck;

/// <summary>
/// The migrator checks the shapes the generator emits; the worker checks the shapes it reads from the
/// registry. Both must say the same, so a drifted table gets the message the migration would have given.
/// </summary>
[Collection(IntegrationGroup.Name)]
public sealed class TableShapeTests
{
    private readonly PgLlmFixture _fixture;

    public TableShapeTests(PgLlmFixture fixture) => _fixture = fixture;

    [Fact]
    public async Task The_registry_gives_the_worker_each_task_as_the_generator_declared_it()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        using var registry = new TaskRegistry(db);
        var tasks = await registry.AllAsync(CancellationToken.None);

        var declared = PgLlmScripts.All.Select(s => s.Table!).ToList();
        Assert.Equal(declared.Sum(t => t.Tasks.Count), tasks.Count);
        foreach (var table in declared)
        {
            foreach (var task in table.Tasks)
            {
                var seen = tasks[table.Schema + "." + table.Table + ":" + task.Name].Table!;
                Assert.Equal((table.Schema, table.Table), (seen.Schema, seen.Table));
                Assert.Equal(table.KeyColumns, seen.KeyColumns);
                var only = Assert.Single(seen.Tasks);
                Assert.Equal(task.Name, only.Name);
                Assert.Equal(task.ReadColumns, only.ReadColumns);
                Assert.Equal(task.Targets, only.Targets);
            }
        }

        // The kinds the typed tables exercise, as both name them.
        Assert.Equal(
            ["integer", "number", "boolean", "enum", "date", "array of string", "array of integer", "object", "date-time"],
            PgLlmScripts.TypedReview.Table!.Tasks.Single().Targets.Select(t => t.Kind));
    }

    [Fact]
    public async Task Typed_targets_in_columns_that_cannot_hold_them_are_each_named()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
        await db.ExecAsync("""
            CREATE TABLE typed_reviews (
                id bigint PRIMARY KEY, body text NOT NULL,
                stars boolean, score numeric, recommended integer, mood text, reviewed_on time,
                tags text, codes boolean[], origin text, seen_at date
            )
            """);

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() => new PgLlmMigrator(db, [PgLlmScripts.TypedReview]).MigrateAsync());

        Assert.Equal(
            [
                "public.typed_reviews: column stars (target of task typed, integer) is boolean, which cannot hold an integer answer: ALTER TABLE public.typed_reviews ALTER COLUMN stars TYPE integer USING stars::integer;",
                "public.typed_reviews: column recommended (target of task typed, boolean) is integer, which cannot hold a boolean answer: ALTER TABLE public.typed_reviews ALTER COLUMN recommended TYPE boolean USING recommended::boolean;",
                "public.typed_reviews: column reviewed_on (target of task typed, date) is time without time zone, which cannot hold a date answer: ALTER TABLE public.typed_reviews ALTER COLUMN reviewed_on TYPE date USING reviewed_on::date;",
                "public.typed_reviews: column tags (target of task typed, array of string) is text, which cannot hold an array of string answer: ALTER TABLE public.typed_reviews ALTER COLUMN tags TYPE text[] USING tags::text[];",
                "public.typed_reviews: column codes (target of task typed, array of integer) is boolean[], which cannot hold an array of integer answer: ALTER TABLE public.typed_reviews ALTER COLUMN codes TYPE integer[] USING codes::integer[];",
                "public.typed_reviews: column origin (target of task typed, object) is text, which cannot hold an object answer: ALTER TABLE public.typed_reviews ALTER COLUMN origin TYPE jsonb USING origin::jsonb;",
                "public.typed_reviews: column seen_at (target of task typed, date-time) is date, which cannot hold a date-time answer: ALTER TABLE public.typed_reviews ALTER COLUMN seen_at TYPE timestamptz USING seen_at::timestamptz;",
            ],
            error.Problems);
        Assert.False(await db.ScalarAsync<bool>("SELECT to_regnamespace('llm') IS NOT NULL"));
    }
}
