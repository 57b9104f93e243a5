using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;
using Npgsql;
using PgLlm.Observability;
using static PgLlm.OperationsConsole.Html;

namespace PgLlm.OperationsConsole;

/// <summary>The console's pages, rendered on the server.</summary>
internal static class ConsolePages
{
    private static readonly string[] States = ["pending", "running", "succeeded", "failed", "superseded", "skipped"];

    public static async Task<IResult> OverviewAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var fragment = await OverviewFragmentAsync(request, dataSource, cancellationToken).ConfigureAwait(false);
        var ms = ((int)request.Options.RefreshInterval.TotalMilliseconds).ToString(CultureInfo.InvariantCulture);
        var body = $$"""
            <p class="muted">Refreshes itself every {{E(Age(request.Options.RefreshInterval))}}. Finished jobs, throughput and latency: the last 24 hours; tokens and cost: UTC days.</p>
            <div id="overview" data-src="{{E(request.Base)}}/overview/fragment" data-refresh-ms="{{ms}}" data-refreshes="0">{{fragment}}</div>
            <script>
            (function () {
              var el = document.getElementById('overview');
              setInterval(function () {
                fetch(el.dataset.src, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
                  .then(function (r) { return r.ok ? r.text() : null; })
                  .then(function (html) { if (html !== null) { el.innerHTML = html; el.dataset.refreshes = String(+el.dataset.refreshes + 1); } })
                  .catch(function () { });
              }, +el.dataset.refreshMs);
            })();
            </script>
            """;
        return request.Page("Overview", string.Empty, body);
    }

    public static async Task<string> OverviewFragmentAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var tasks = await ConsoleQueries.ReadOverviewAsync(dataSource, cancellationToken).ConfigureAwait(false);
        if (tasks.Count == 0)
        {
            return "<p>No task is registered yet (llm.task is empty): run the migrations with your tables' scripts.</p>";
        }

        var sb = new StringBuilder();
        foreach (var task in tasks)
        {
            sb.Append(TaskCard(request, task));
        }

        return sb.ToString();
    }

    private static string TaskCard(ConsoleRequest request, ConsoleTask t)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<section class=\"card\" data-task=\"{E(t.Task)}\"><h2>{E(t.Task)} <span class=\"muted\">{E(t.Model ?? "default model")}</span>");
        if (t.PausedAt is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $" <span class=\"paused\" data-figure=\"paused\">paused {E(Time(t.PausedAt))} by {E(t.PausedBy)}</span> ");
            sb.Append(request.ActionButton("resume", "Resume", new Dictionary<string, string> { ["task"] = t.Task }));
        }
        else
        {
            sb.Append(' ').Append(request.ActionButton("pause", "Pause", new Dictionary<string, string> { ["task"] = t.Task }));
        }

        var today = t.Today;
        sb.Append("</h2><div class=\"figures\">");
        Figure(sb, "pending", "pending", N(t.Pending), $"jobs?task={Q(t.Task)}&state=pending", request);
        Figure(sb, "running", "running", N(t.Running), $"jobs?task={Q(t.Task)}&state=running", request);
        Figure(sb, "failed", "failed (dead letters)", N(t.Failed), $"dead-letters", request);
        Figure(sb, "succeeded-24h", "succeeded 24 h", N(t.Finished24h.GetValueOrDefault("succeeded")), $"jobs?task={Q(t.Task)}&state=succeeded", request);
        Figure(sb, "superseded-24h", "superseded 24 h", N(t.Finished24h.GetValueOrDefault("superseded")), null, request);
        Figure(sb, "skipped-24h", "skipped 24 h", N(t.Finished24h.GetValueOrDefault("skipped")), null, request);
        Figure(sb, "oldest-pending", "oldest pending", Age(t.OldestPending), null, request);
        Figure(sb, "eta", "ETA at last hour's rate", t.Eta is null ? "–" : Age(t.Eta), null, request);
        Figure(sb, "coverage", "coverage", $"{Percent(t.Coverage)} <span class=\"muted\">{N(t.Filled)} / ≈{N(t.TableRows)}</span>", null, request);
        Figure(sb, "stale", "stale rows", N(t.Stale), null, request);
        Figure(sb, "edited", "edited cells", N(t.EditedCells), null, request);
        Figure(sb, "tokens-today", "tokens today", N(today.InputTokens + today.OutputTokens), null, request);
        Figure(sb, "cost-today", "cost today", Cost(today.Cost), null, request);
        Figure(sb, "cache-hit-rate", "cache hits 24 h", Percent(t.CacheHitRate), null, request);
        sb.Append("</div>");
        sb.Append(Chart("jobs finished per 10 min", t.Buckets.Select(b => (double)b.Finished).ToList(),
            t.Buckets.Select(b => b.LatencySeconds).ToList(), "model latency s"));
        sb.Append("<details><summary>Tokens and cost per day</summary><table><tr><th>UTC day</th><th>jobs</th><th>tokens in</th><th>tokens out</th><th>cost</th></tr>");
        foreach (var day in t.Days)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-day=\"{day.Day:yyyy-MM-dd}\"><td>{day.Day:yyyy-MM-dd}</td><td class=\"n\">{N(day.Jobs)}</td><td class=\"n\">{N(day.InputTokens)}</td><td class=\"n\">{N(day.OutputTokens)}</td><td class=\"n\">{Cost(day.Cost)}</td></tr>");
        }

        sb.Append("</table></details></section>");
        return sb.ToString();
    }

    private static void Figure(StringBuilder sb, string name, string label, string valueHtml, string? link, ConsoleRequest request)
    {
        var value = link is null ? valueHtml : $"<a href=\"{E(request.Base)}/{link}\">{valueHtml}</a>";
        sb.Append(CultureInfo.InvariantCulture, $"<div><b data-figure=\"{name}\">{value}</b><span class=\"muted\">{E(label)}</span></div>");
    }

    public static async Task<IResult> EndpointsAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var endpoints = await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var budgets = await BudgetStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var sb = new StringBuilder("<table id=\"endpoints\"><tr><th>endpoint</th><th>state</th><th>why</th><th>since</th><th>failures</th><th>next probe</th><th>rate limits (used in the last minute / per minute)</th><th>paused until</th></tr>");
        foreach (var e in endpoints)
        {
            var limits = string.Join("<br>", e.RateLimits.Select(l => $"{E(l.Kind)}: {N(l.UsedLastMinute)} / {N(l.PerMinute)}"));
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-endpoint=\"{E(e.Endpoint)}\"><td>{E(e.Endpoint)}</td><td data-figure=\"state\">{E(e.State)}</td><td>{E(e.Reason)}</td><td>{Time(e.Since)}</td><td class=\"n\">{N(e.ConsecutiveFailures)}</td><td>{Time(e.NextProbeAt)}</td><td>{limits}</td><td>{Time(e.PausedUntil)}</td></tr>");
        }

        if (endpoints.Count == 0)
        {
            sb.Append("<tr><td colspan=\"8\" class=\"muted\">No worker has run yet.</td></tr>");
        }

        sb.Append("</table><h2>Budgets (today)</h2><table id=\"budgets\"><tr><th>scope</th><th>name</th><th>daily tokens</th><th>daily cost</th><th>spent tokens</th><th>spent cost</th><th>reserved</th><th>waiting</th></tr>");
        foreach (var b in budgets)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(b.Scope)}</td><td>{E(b.Name)}</td><td class=\"n\">{N(b.DailyTokens)}</td><td class=\"n\">{Cost(b.DailyCost)}</td><td class=\"n\">{N(b.SpentTokens)}</td><td class=\"n\">{Cost(b.SpentCost)}</td><td class=\"n\">{N(b.ReservedTokens)} · {Cost(b.ReservedCost)}</td><td>{E(b.Waiting ? b.Reason : "no")}</td></tr>");
        }

        if (budgets.Count == 0)
        {
            sb.Append("<tr><td colspan=\"8\" class=\"muted\">No budget is set (pgllm budget set).</td></tr>");
        }

        sb.Append("</table>");
        return request.Page("Endpoints", "endpoints", sb.ToString());
    }

    public static async Task<IResult> DeadLettersAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var groups = await ConsoleQueries.ReadFailureGroupsAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var sb = new StringBuilder("<table id=\"dead-letters\"><tr><th>task</th><th>last error</th><th>jobs</th><th>latest</th><th></th><th>jobs (latest 20)</th></tr>");
        foreach (var g in groups)
        {
            var fields = new Dictionary<string, string> { ["task"] = g.Task, ["error"] = g.Error ?? string.Empty, ["no-error"] = g.Error is null ? "1" : "0" };
            var jobs = string.Join(' ', g.JobIds.Select(id =>
                $"<span data-job=\"{id}\"><a href=\"{E(request.Base)}/jobs?task={Q(g.Task)}&amp;id={id}\">{id}</a>{request.ActionButton("retry-job", "↻", new Dictionary<string, string> { ["id"] = id.ToString(CultureInfo.InvariantCulture) })}</span>"));
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-group-task=\"{E(g.Task)}\"><td>{E(g.Task)}</td><td><pre>{E(g.Error ?? "(no error recorded)")}</pre></td><td class=\"n\" data-figure=\"count\">{N(g.Count)}</td><td>{Time(g.Latest)}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td>{request.ActionButton("retry-group", $"Retry all {N(g.Count)}", fields)}</td><td>{jobs}</td></tr>");
        }

        if (groups.Count == 0)
        {
            sb.Append("<tr><td colspan=\"6\" class=\"muted\" id=\"no-dead-letters\">No dead letters.</td></tr>");
        }

        sb.Append("</table>");
        return request.Page("Dead letters", "dead-letters", sb.ToString());
    }

    public static async Task<IResult> WorkAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var runs = await RunStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var batches = await ConsoleQueries.ReadBatchesAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var sb = new StringBuilder("<h2>Re-runs and backfills</h2><table id=\"runs\"><tr><th>run</th><th>task</th><th>kind</th><th>rows</th><th>enqueued</th><th>skipped</th><th>pending</th><th>running</th><th>succeeded</th><th>failed</th><th>progress</th><th>spent / cap</th></tr>");
        foreach (var r in runs)
        {
            var done = r.Succeeded + r.Failed;
            var progress = r.Enqueued > 0 ? (double)done / r.Enqueued : (double?)null;
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-run=\"{r.Id}\"><td>{r.Id}</td><td>{E(r.Task)}</td><td>{E(r.Kind)} ({E(r.Selection)}){(r.Finished ? " · all enqueued" : string.Empty)}</td><td class=\"n\">{N(r.Rows)}</td><td class=\"n\">{N(r.Enqueued)}</td><td class=\"n\">{N(r.Skipped)}</td><td class=\"n\">{N(r.Pending)}</td><td class=\"n\">{N(r.Running)}</td><td class=\"n\">{N(r.Succeeded)}</td><td class=\"n\">{N(r.Failed)}</td><td>{Percent(progress)}</td><td>{Cost(r.Spent)} / {Cost(r.MaxCost)}</td></tr>");
        }

        if (runs.Count == 0)
        {
            sb.Append("<tr><td colspan=\"12\" class=\"muted\">No re-run or backfill in progress.</td></tr>");
        }

        sb.Append("</table><h2>Batches</h2><table id=\"batches\"><tr><th>batch</th><th>endpoint</th><th>model</th><th>state</th><th>lines</th><th>succeeded</th><th>failed</th><th>missing</th><th>created</th><th>submitted</th><th>expected by</th><th></th></tr>");
        foreach (var b in batches)
        {
            var cancel = b.CancelRequestedAt is not null ? $"cancel asked {Time(b.CancelRequestedAt)}"
                : b.Open ? request.ActionButton("cancel-batch", "Cancel", new Dictionary<string, string> { ["id"] = b.Id.ToString(CultureInfo.InvariantCulture) }, $"Cancel batch {b.Id}?") : string.Empty;
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-batch=\"{b.Id}\"><td>{b.Id}</td><td>{E(b.Endpoint)}</td><td>{E(b.Model)}</td><td data-figure=\"state\">{E(b.State)}</td><td class=\"n\">{N(b.Lines)}</td><td class=\"n\">{N(b.Succeeded)}</td><td class=\"n\">{N(b.Failed)}</td><td class=\"n\">{N(b.Missing)}</td><td>{Time(b.CreatedAt)}</td><td>{Time(b.SubmittedAt)}</td><td>{Time(b.ExpectedBy)}</td><td>{cancel}</td></tr>");
        }

        if (batches.Count == 0)
        {
            sb.Append("<tr><td colspan=\"12\" class=\"muted\">No batch.</td></tr>");
        }

        sb.Append("</table>");
        return request.Page("Work in progress", "work", sb.ToString());
    }

    public static async Task<IResult> LogAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var actions = await ConsoleQueries.ReadActionsAsync(dataSource, cancellationToken: cancellationToken).ConfigureAwait(false);
        var sb = new StringBuilder("<table id=\"actions\"><tr><th>#</th><th>when</th><th>who</th><th>database role</th><th>action</th><th>target</th><th>outcome</th></tr>");
        foreach (var a in actions)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-action-id=\"{a.Id}\"><td>{a.Id}</td><td>{Time(a.At)}</td><td data-figure=\"actor\">{E(a.Actor)}</td><td>{E(a.Role)}</td><td data-figure=\"action\">{E(a.Action)}</td><td>{E(a.Target)}</td><td><code>{E(a.Detail)}</code></td></tr>");
        }

        if (actions.Count == 0)
        {
            sb.Append("<tr><td colspan=\"7\" class=\"muted\">No action taken yet.</td></tr>");
        }

        sb.Append("</table>");
        return request.Page("Action log", "log", sb.ToString());
    }

    public static string StateOptions(string? selected) =>
        "<option value=\"\">any state</option>" + string.Concat(States.Select(s => $"<option{(s == selected ? " selected" : string.Empty)}>{s}</option>"));

    public static bool IsState(string? state) => state is not null && States.Contains(state);
}
