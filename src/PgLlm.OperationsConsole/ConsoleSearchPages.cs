using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Npgsql;
using static PgLlm.OperationsConsole.Html;

namespace PgLlm.OperationsConsole;

/// <summary>The search of jobs and a row's history ("why is row 42 empty?").</summary>
internal static class ConsoleSearchPages
{
    public static async Task<IResult> JobsAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var query = request.Context.Request.Query;
        var names = await TaskNamesAsync(dataSource, cancellationToken).ConfigureAwait(false);
        var task = query["task"].ToString() is { Length: > 0 } t ? t : names.FirstOrDefault();
        var state = ConsolePages.IsState(query["state"]) ? query["state"].ToString() : null;
        var typedKey = query["key"].ToString();
        var sb = new StringBuilder($"<form method=\"get\" action=\"{E(request.Base)}/jobs\" id=\"search\" class=\"card\">");
        sb.Append("<label>task <select name=\"task\">");
        foreach (var name in names)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<option{(name == task ? " selected" : string.Empty)}>{E(name)}</option>");
        }

        sb.Append(CultureInfo.InvariantCulture, $"</select></label> <label>state <select name=\"state\">{ConsolePages.StateOptions(state)}</select></label> ");
        sb.Append(CultureInfo.InvariantCulture, $"<label>row key <input name=\"key\" value=\"{E(typedKey)}\" placeholder=\"42 or {{&quot;id&quot;: 42}}\"></label> <button type=\"submit\">Search</button></form>");
        if (task is null || !names.Contains(task))
        {
            sb.Append(task is null ? "<p>No task is registered yet.</p>" : $"<p class=\"flash error\">Unknown task {E(task)}.</p>");
            return request.Page("Search jobs", "jobs", sb.ToString());
        }

        string? rowKey;
        try
        {
            rowKey = ConsoleQueries.NormalizeRowKey(typedKey, await ConsoleQueries.ReadKeyColumnsAsync(dataSource, task, cancellationToken).ConfigureAwait(false));
        }
        catch (FormatException ex)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<p class=\"flash error\">{E(ex.Message)}</p>");
            return request.Page("Search jobs", "jobs", sb.ToString());
        }

        var jobs = long.TryParse(query["id"], NumberStyles.None, CultureInfo.InvariantCulture, out var id)
            ? await ConsoleQueries.ReadJobAsync(dataSource, id, cancellationToken).ConfigureAwait(false)
            : await ConsoleQueries.SearchJobsAsync(dataSource, task, state, rowKey, 100, cancellationToken).ConfigureAwait(false);
        if (rowKey is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<p><a id=\"row-history-link\" href=\"{E(request.Base)}/row?task={Q(task)}&amp;key={Q(rowKey)}\">History of row {E(rowKey)}</a> (every task of its table)</p>");
        }

        sb.Append(JobTable(request, jobs, showRow: true));
        return request.Page("Search jobs", "jobs", sb.ToString());
    }

    public static async Task<IResult> RowAsync(ConsoleRequest request, NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        var task = request.Context.Request.Query["task"].ToString();
        string? rowKey;
        try
        {
            rowKey = ConsoleQueries.NormalizeRowKey(request.Context.Request.Query["key"], await ConsoleQueries.ReadKeyColumnsAsync(dataSource, task, cancellationToken).ConfigureAwait(false));
        }
        catch (FormatException ex)
        {
            return request.Page("Row history", "jobs", $"<p class=\"flash error\">{E(ex.Message)}</p>");
        }

        if (rowKey is null)
        {
            return request.Page("Row history", "jobs", "<p>Give a task and a row key (search).</p>");
        }

        var jobs = await ConsoleQueries.ReadRowHistoryAsync(dataSource, task, rowKey, cancellationToken).ConfigureAwait(false);
        var cells = await ConsoleQueries.ReadEditedCellsAsync(dataSource, task, rowKey, cancellationToken).ConfigureAwait(false);
        var tasks = await ConsoleQueries.ReadOverviewTasksOfTableAsync(dataSource, task, cancellationToken).ConfigureAwait(false);
        var sb = new StringBuilder($"<p>Row <code id=\"row-key\">{E(rowKey)}</code> of the table of task {E(task)}: every job of every task of that table still kept.</p>");
        sb.Append("<div class=\"card\" id=\"why\"><h2>Why is it as it is?</h2><ul>");
        foreach (var (name, paused) in tasks)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<li data-why-task=\"{E(name)}\">{E(name)}: {E(Why(name, paused, jobs, cells))}</li>");
        }

        sb.Append("</ul></div>");
        if (cells.Count > 0)
        {
            sb.Append("<h2>Edited cells</h2><table id=\"edited\"><tr><th>column</th><th>edited</th><th>by</th><th></th></tr>");
            foreach (var cell in cells)
            {
                var release = request.ActionButton("release-cell", "Release", new Dictionary<string, string> { ["table"] = cell.Table, ["key"] = rowKey, ["column"] = cell.Column });
                sb.Append(CultureInfo.InvariantCulture, $"<tr data-column=\"{E(cell.Column)}\"><td>{E(cell.Column)}</td><td>{Time(cell.EditedAt)}</td><td>{E(cell.EditedBy)}</td><td>{release}</td></tr>");
            }

            sb.Append("</table>");
        }

        sb.Append("<h2>Jobs</h2>").Append(JobTable(request, jobs, showRow: false));
        return request.Page("Row history", "jobs", sb.ToString());
    }

    private static string Why(string task, bool paused, IReadOnlyList<ConsoleJob> jobs, IReadOnlyList<ConsoleEditedCell> cells)
    {
        var latest = jobs.Where(j => j.Task == task).MaxBy(j => j.Id);
        var pausedNote = paused ? " The task is paused: its jobs wait until it is resumed." : string.Empty;
        var editedNote = cells.Count > 0 ? $" {cells.Count} cell(s) of the row were edited by someone else and are kept until released." : string.Empty;
        var what = latest switch
        {
            null => "no job kept for this row: it was never enqueued (a read column is null, or it predates the task: backfill it), or its jobs were pruned.",
            { State: "succeeded" } => $"answered by job {latest.Id} at {Time(latest.FinishedAt)}: {latest.Answer}.",
            { State: "pending" } => $"job {latest.Id} waits (attempt {latest.Attempt} done{(latest.LastError is null ? string.Empty : ", last error: " + latest.LastError)}).",
            { State: "running" } => $"job {latest.Id} is with the model (attempt {latest.Attempt}).",
            { State: "failed" } => $"job {latest.Id} failed after {latest.Attempt} attempt(s): {latest.LastError}. Retry it from the dead letters.",
            { State: "superseded" } => $"job {latest.Id} was superseded: the row changed while the model answered; a newer job carries the change.",
            _ => $"job {latest.Id} was skipped: {latest.LastError ?? "the row was gone or an input was null"}.",
        };
        return what + pausedNote + editedNote;
    }

    private static string JobTable(ConsoleRequest request, IReadOnlyList<ConsoleJob> jobs, bool showRow)
    {
        var sb = new StringBuilder("<table id=\"jobs\"><tr><th>job</th><th>task</th>");
        sb.Append(showRow ? "<th>row key</th>" : string.Empty);
        sb.Append("<th>state</th><th>attempts</th><th>answer</th><th>model</th><th>tokens in/out</th><th>cost</th><th>created</th><th>finished</th><th>errors</th><th></th></tr>");
        foreach (var j in jobs)
        {
            var row = showRow ? $"<td><a href=\"{E(request.Base)}/row?task={Q(j.Task)}&amp;key={Q(j.RowKey)}\">{E(j.RowKey)}</a></td>" : string.Empty;
            var retry = j.State == "failed" ? request.ActionButton("retry-job", "Retry", new Dictionary<string, string> { ["id"] = j.Id.ToString(CultureInfo.InvariantCulture) }) : string.Empty;
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-job=\"{j.Id}\"><td>{j.Id}</td><td>{E(j.Task)}</td>{row}<td data-figure=\"state\">{E(j.State)}</td><td class=\"n\">{j.Attempt}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td><pre>{E(j.Answer)}</pre></td><td>{E(j.Model)}{(j.CacheHit == true ? " (cache)" : string.Empty)}</td><td class=\"n\">{N(j.InputTokens)} / {N(j.OutputTokens)}</td><td class=\"n\">{Cost(j.Cost)}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td>{Time(j.CreatedAt)}</td><td>{Time(j.FinishedAt)}</td><td><pre>{E(ErrorsText(j.Errors))}</pre></td><td>{retry}</td></tr>");
        }

        if (jobs.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td colspan=\"{(showRow ? 13 : 12)}\" class=\"muted\" id=\"no-jobs\">No job found.</td></tr>");
        }

        return sb.Append("</table>").ToString();
    }

    private static string ErrorsText(string errors)
    {
        using var document = JsonDocument.Parse(errors);
        return string.Join('\n', document.RootElement.EnumerateArray().Select(e =>
            (e.TryGetProperty("attempt", out var a) ? "#" + a.ToString() + " " : string.Empty)
            + (e.TryGetProperty("error", out var m) ? m.GetString() : e.TryGetProperty("event", out var v) ? v.GetString() : e.GetRawText())));
    }

    private static async Task<List<string>> TaskNamesAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT name FROM llm.task ORDER BY name");
        var names = new List<string>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            names.Add(reader.GetString(0));
        }

        return names;
    }
}
