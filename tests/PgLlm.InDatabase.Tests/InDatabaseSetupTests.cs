using Npgsql;
using PgLlm.Local;
using PgLlm.Migrations;
using PgLlm.Templates;

namespace PgLlm.InDatabase.Tests;

/// <summary>Opting in: missing extensions are named, secrets stay with the owner, prompts render like the .NET worker's.</summary>
[Collection(InDatabaseGroup.Name)]
public sealed class InDatabaseSetupTests
{
    private readonly InDatabaseFixture _fixture;

    public InDatabaseSetupTests(InDatabaseFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task The_core_scripts_need_neither_extension()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());

        await new PgLlmMigrator(db, InDatabaseFixture.TableScripts).MigrateAsync();

        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM pg_extension WHERE extname IN ('http', 'pg_cron', 'plpython3u')"));
        Assert.NotNull(await db.ScalarAsync<string?>("SELECT to_regclass('llm.job')::text"));
        Assert.Null(await db.ScalarAsync<string?>("SELECT to_regclass('llm.worker_settings')::text"));
    }

    [Fact]
    public async Task Turning_the_mode_on_without_the_http_extension_names_it_and_applies_nothing()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() =>
            new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Schedule = false })).MigrateAsync());

        Assert.Contains("extension 'http'", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("pg_cron", error.Message, StringComparison.Ordinal);
        Assert.Null(await db.ScalarAsync<string?>("SELECT to_regclass('llm.job')::text"));
    }

    [Fact]
    public async Task Scheduling_without_pg_cron_names_it()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
        await db.ExecAsync(InDatabaseFixture.HttpStandIn);

        var error = await Assert.ThrowsAsync<PgLlmMigrationException>(() =>
            new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker()).MigrateAsync());

        Assert.Contains("extension 'pg_cron' is available but not installed", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("'http'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_worker_script_applied_by_another_tool_also_refuses_without_http()
    {
        await using var db = NpgsqlDataSource.Create(await _fixture.Postgres.CreateDatabaseAsync());
        await new PgLlmMigrator(db, InDatabaseFixture.TableScripts).MigrateAsync();

        var error = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync(PgLlmInDatabase.Scripts(new PgLlmInDatabaseOptions { Schedule = false }).Single().Sql));

        Assert.Contains("extension \"http\"", error.MessageText, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Applying_the_scripts_again_changes_nothing()
    {
        await using var db = await _fixture.CreateDatabaseAsync();

        var again = await new PgLlmMigrator(db, InDatabaseFixture.TableScripts.WithInDatabaseWorker(new PgLlmInDatabaseOptions { Schedule = false })).MigrateAsync();

        Assert.Empty(again.Applied);
        Assert.Equal(_fixture.Model.BaseUrl.ToString(), await db.ScalarAsync<string>("SELECT base_url FROM llm.worker_settings"));
    }

    [Fact]
    public async Task The_key_is_readable_by_the_owner_only_and_never_in_a_function_or_a_statement()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("CREATE ROLE app_reader LOGIN; GRANT USAGE ON SCHEMA llm TO app_reader; GRANT SELECT ON llm.job TO app_reader");
        await db.ExecAsync("INSERT INTO items (id, input) VALUES (1, 'x')");
        long statementsWithKey = -1;
        _fixture.Model.Responder = request =>
        {
            using var connection = db.OpenConnection();
            using var command = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE strpos(query, $1) > 0", connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _fixture.Model.ApiKey });
            statementsWithKey = (long)command.ExecuteScalar()!;
            return ModelReply.Json(DeterministicModel.Answer(request));
        };

        await InDatabaseFixture.RunWorkerAsync(db);

        Assert.Equal(0, statementsWithKey);
        Assert.Equal("succeeded", await db.ScalarAsync<string>("SELECT state FROM llm.job"));
        Assert.Equal(0, await db.ScalarAsync<long>(
            "SELECT count(*) FROM pg_proc WHERE strpos(prosrc, $1) > 0 OR strpos(coalesce(array_to_string(proconfig, ','), ''), $1) > 0",
            _fixture.Model.ApiKey));

        await using var asReader = new NpgsqlDataSourceBuilder(db.ConnectionString) { ConnectionStringBuilder = { Username = "app_reader" } }.Build();
        Assert.Equal(1, await asReader.ScalarAsync<long>("SELECT count(*) FROM llm.job"));
        foreach (var sql in new[]
                 {
                     "SELECT api_key FROM llm.worker_settings",
                     "SELECT llm.configure('http://127.0.0.1:9/v1', 'stolen', 'm')",
                     "CALL llm.run_worker(1)",
                 })
        {
            var denied = await Assert.ThrowsAsync<PostgresException>(() => asReader.ExecAsync(sql));
            Assert.Equal(PostgresErrorCodes.InsufficientPrivilege, denied.SqlState);
        }
    }

    [Theory]
    [InlineData("ftp://example.com", "absolute http(s) URL")]
    [InlineData("not a url", "absolute http(s) URL")]
    public async Task Configure_refuses_a_malformed_base_url(string baseUrl, string expected)
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);

        var error = await Assert.ThrowsAsync<PostgresException>(() => PgLlmInDatabase.ConfigureAsync(db, baseUrl, "k", "m"));

        Assert.Contains(expected, error.MessageText, StringComparison.Ordinal);
        Assert.Equal(0, await db.ScalarAsync<long>("SELECT count(*) FROM llm.worker_settings"));
    }

    [Theory]
    [InlineData("Echo {Input}", """{"Input": "plain"}""")]
    [InlineData("{{literal}} and {a}}}", """{"a": "x"}""")]
    [InlineData("single pass: {a} {b}", """{"a": "{b}", "b": "B"}""")]
    [InlineData("numbers {n}, objects {o}, arrays {r}, true {t}", """{"n": 1.50, "o": {"k": [1, "two"]}, "r": [1, 2], "t": true}""")]
    [InlineData("missing {gone} and null {z}", """{"z": null}""")]
    [InlineData("unicode {u} ✓", """{"u": "ñandú \"quoted\" \\ back"}""")]
    [InlineData("{ spaced }", """{" spaced ": "kept"}""")]
    [InlineData("", "{}")]
    public async Task Prompts_render_exactly_as_the_dotnet_worker_renders_them(string template, string values)
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);
        // The values take the same path as in the worker: the inputs function's jsonb, as text.
        var inputs = await db.ScalarAsync<string>("SELECT $1::jsonb::text", values);
        using var document = System.Text.Json.JsonDocument.Parse(inputs);

        var rendered = await db.ScalarAsync<string>("SELECT llm.render_prompt($1, $2::jsonb)", template, inputs);

        Assert.Equal(PromptTemplate.Parse(template).Render(document.RootElement), rendered);
    }

    [Theory]
    [InlineData("a } b")]
    [InlineData("a { b")]
    [InlineData("{a{b}")]
    [InlineData("empty {} placeholder")]
    [InlineData("blank {  } placeholder")]
    public async Task Malformed_templates_are_refused_by_both_renderers(string template)
    {
        await using var db = await _fixture.CreateDatabaseAsync(configure: false);

        Assert.Throws<FormatException>(() => PromptTemplate.Parse(template));
        var error = await Assert.ThrowsAsync<PostgresException>(() => db.ExecAsync("SELECT llm.render_prompt($1, '{}')", template));
        Assert.StartsWith("malformed prompt template", error.MessageText, StringComparison.Ordinal);
    }
}
