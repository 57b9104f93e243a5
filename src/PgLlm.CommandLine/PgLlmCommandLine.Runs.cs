using System.Text.Json;
using PgLlm.Observability;

namespace PgLlm.Cli;

public sealed partial class PgLlmCommandLine
{
    /// <summary>One line per re-run or backfill in progress: <c>Re-run 7 of public.t:x (stale): 40 of 100 rows done, 10 pending, 1 failed; cost 0.12 of 1.00</c>.</summary>
    private void WriteRuns(IReadOnlyList<RunStatus> runs)
    {
        foreach (var run in runs)
        {
            var what = run.Kind == "rerun" ? "Re-run" : "Backfill";
            var cost = run.Spent is { } spent ? BudgetStatus.FormatCost(spent) : "unknown";
            var cap = run.MaxCost is { } max ? " of " + BudgetStatus.FormatCost(max) : string.Empty;
            var done = run.Succeeded + run.Failed + run.Skipped;
            Say($"{what} {run.Id} of {run.Task} ({run.Selection}): {done} of {run.Rows} rows done, {run.Pending} pending, {run.Running} running, {run.Failed} failed; cost {cost}{cap}{(run.Finished ? ", all enqueued" : string.Empty)}");
        }
    }

    private static void WriteRunsJson(Utf8JsonWriter json, IReadOnlyList<RunStatus> runs)
    {
        json.WriteStartArray("runs");
        foreach (var run in runs)
        {
            json.WriteStartObject();
            json.WriteNumber("id", run.Id);
            json.WriteString("task", run.Task);
            json.WriteString("kind", run.Kind);
            json.WriteString("selection", run.Selection);
            json.WriteNumber("rows", run.Rows);
            json.WriteNumber("enqueued", run.Enqueued);
            json.WriteNumber("skipped", run.Skipped);
            json.WriteNumber("pending", run.Pending);
            json.WriteNumber("running", run.Running);
            json.WriteNumber("succeeded", run.Succeeded);
            json.WriteNumber("failed", run.Failed);
            WriteNumberOrNull(json, "spent", run.Spent);
            WriteNumberOrNull(json, "maxCost", run.MaxCost);
            json.WriteBoolean("finished", run.Finished);
            json.WriteEndObject();
        }

        json.WriteEndArray();
    }
}
