using System.Text.RegularExpressions;
using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>
/// <c>Tier = LlmTier.Batch</c>: the task's enqueue trigger puts its jobs in the batch tier (priority 2, no wake-up, no
/// promotion) and its registry row says <c>tier => 'batch'</c>; a live task's SQL is the same as without the option.
/// </summary>
public sealed partial class TierTests
{
    private static readonly string LiveOnly = GoldenTests.Batch.Replace(", Tier = LlmTier.Batch", string.Empty, StringComparison.Ordinal);

    [Fact]
    public void Live_is_the_default_and_its_tasks_register_without_a_tier_argument()
    {
        var explicitLive = GoldenTests.Batch.Replace("Tier = LlmTier.Batch", "Tier = LlmTier.Live", StringComparison.Ordinal);

        Assert.NotEqual(GoldenTests.Batch, explicitLive);
        Assert.Equal(Sql(LiveOnly), Sql(explicitLive));
        Assert.DoesNotContain("tier =>", Sql(LiveOnly), StringComparison.Ordinal);
        Assert.DoesNotContain("priority)", Sql(LiveOnly), StringComparison.Ordinal);
    }

    [Fact]
    public void A_batch_tier_task_enqueues_at_priority_2_without_waking_or_promoting_and_registers_its_tier()
    {
        var tasks = Tasks(Sql(GoldenTests.Batch));

        Assert.Equal(["public.products:summary", "public.products:summary_de", "public.products:catalog"], tasks.Keys);
        foreach (var name in new[] { "public.products:summary_de", "public.products:catalog" })
        {
            var task = tasks[name];
            Assert.Equal(
                $$"""
                BEGIN
                    -- The batch tier: the batch worker collects its pending jobs on its own schedule (no wake-up).
                    INSERT INTO llm.job (task, row_key, max_attempts, priority)
                    VALUES ('{{name}}', jsonb_build_object('id', NEW."id"), 5, 2)
                    ON CONFLICT (task, row_key) WHERE state = 'pending' DO NOTHING;
                    RETURN NULL;
                END

                """,
                EnqueueBody(task));
            Assert.DoesNotContain("pg_notify", EnqueueBody(task), StringComparison.Ordinal);
            Assert.DoesNotContain("SET priority", EnqueueBody(task), StringComparison.Ordinal);
            Assert.Single(Regex.Matches(task, "tier => 'batch'"));
            Assert.EndsWith(",\n    tier => 'batch');", Registration(task), StringComparison.Ordinal);
            Assert.Contains("\n--   tier:   batch\n", task, StringComparison.Ordinal);
        }

        // The chain is as it was: the batch-tier translation waits for the live summary, whose write-back wakes it.
        Assert.Contains(",\n    after => ARRAY['public.products:summary']::text[],\n    tier => 'batch');", tasks["public.products:summary_de"], StringComparison.Ordinal);
        Assert.Contains("PERFORM llm.wake_after('public.products:summary', p_job_ids);", tasks["public.products:summary"], StringComparison.Ordinal);
    }

    [Fact]
    public void Only_the_batch_tier_tasks_enqueue_function_registration_and_header_differ_from_the_live_declaration()
    {
        var batch = Tasks(Sql(GoldenTests.Batch));
        var live = Tasks(Sql(LiveOnly));

        // The live task is byte for byte the same.
        Assert.Equal(live["public.products:summary"], batch["public.products:summary"]);
        foreach (var name in new[] { "public.products:summary_de", "public.products:catalog" })
        {
            Assert.Matches(
                "\n    IF NOT FOUND THEN\n        UPDATE llm.job SET priority = 0\n[^\n]+\n        RETURN NULL;\n" + Regex.Escape(PgLlm.Generators.Sql.TableScriptEmitter.WakeSleepingWorkers),
                EnqueueBody(live[name]));
            Assert.Equal(Without(live[name]), Without(batch[name]).Replace(",\n    tier => 'batch');", ");", StringComparison.Ordinal).Replace("\n--   tier:   batch", string.Empty, StringComparison.Ordinal));
        }
    }

    [Fact]
    public void The_tier_is_not_part_of_the_definition_hash()
    {
        var batch = DefinitionHashes().Matches(Sql(GoldenTests.Batch)).Select(m => m.Value).ToList();
        var live = DefinitionHashes().Matches(Sql(LiveOnly)).Select(m => m.Value).ToList();

        Assert.Equal(3, batch.Count);
        Assert.Equal(live, batch);
        Assert.NotEqual(Script(GoldenTests.Batch).Name, Script(LiveOnly).Name);
    }

    private static PgLlmScript Script(string source)
    {
        var result = GeneratorHarness.Run(source);
        Assert.Empty(result.Diagnostics);
        return GeneratorHarness.LoadScripts(result.Output).Single(s => s.Kind == PgLlmScriptKind.Table);
    }

    private static string Sql(string source) => Script(source).Sql;

    /// <summary>Each task's part of the script (from its "-- Task" header to the next), by task name.</summary>
    private static Dictionary<string, string> Tasks(string sql) =>
        sql.Split("\n-- Task ").Skip(1).ToDictionary(part => part[..part.IndexOf('\n', StringComparison.Ordinal)], part => "-- Task " + part);

    /// <summary>The body of the task's enqueue trigger function, between its dollar quotes.</summary>
    private static string EnqueueBody(string task)
    {
        var start = task.IndexOf(":enqueue\"() RETURNS trigger", StringComparison.Ordinal);
        Assert.True(start >= 0);
        var open = task.IndexOf("$pgllm$\n", start, StringComparison.Ordinal) + "$pgllm$\n".Length;
        return task[open..task.IndexOf("$pgllm$;", open, StringComparison.Ordinal)];
    }

    private static string Registration(string task)
    {
        var start = task.IndexOf("SELECT llm.register_task(", StringComparison.Ordinal);
        return task[start..(task.IndexOf(");\n", start, StringComparison.Ordinal) + 2)];
    }

    /// <summary>The task's part without its enqueue function's body.</summary>
    private static string Without(string task) => task.Replace(EnqueueBody(task), string.Empty, StringComparison.Ordinal);

    [GeneratedRegex("definition_hash => '[0-9a-f]{16}'")]
    private static partial Regex DefinitionHashes();
}
