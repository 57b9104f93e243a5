using System.Globalization;
using PgLlm.Local;
using PuppeteerSharp;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>The console in a real browser, over a real database whose jobs a real worker ran.</summary>
[Collection(ConsoleGroup.Name)]
public sealed class ConsoleBrowserTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const int WaitMs = 30_000;
    private readonly ConsoleFixture _fixture;

    public ConsoleBrowserTests(ConsoleFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
        // Bodies with "bad" are refused by the endpoint (HTTP 400: permanent, failed at once); the others answered.
        fixture.Model.Responder = request => request.UserText.Contains("bad", StringComparison.Ordinal)
            ? ModelReply.Error(400, "the model refused this ticket")
            : ModelReply.Json(DeterministicModel.Answer(request));
    }

    [BrowserFact]
    public async Task The_overview_shows_the_figures_SQL_gives_and_refreshes_itself_without_a_reload()
    {
        await using var db = await SeededAsync(good: 5, bad: 3);
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "olivia:operator", string.Empty);

        var card = "[data-task=\"public.tickets:ticket_category\"]";
        Assert.Equal(await CountAsync(db, "pending"), await FigureAsync(page, card, "pending"));
        Assert.Equal(3L, await FigureAsync(page, card, "failed"));
        Assert.Equal(await CountAsync(db, "failed"), await FigureAsync(page, card, "failed"));
        Assert.Equal(await CountAsync(db, "succeeded"), await FigureAsync(page, card, "succeeded-24h"));
        var tokens = await db.Owner.ScalarAsync<long>(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint FROM llm.job WHERE task = 'public.tickets:ticket_category' AND finished_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'");
        Assert.True(tokens > 0);
        Assert.Equal(tokens, await FigureAsync(page, card, "tokens-today"));
        Assert.Equal(5L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.row_version WHERE task = 'public.tickets:ticket_category'"));
        Assert.Contains("5 / ", await TextAsync(page, $"{card} [data-figure=\"coverage\"]"), StringComparison.Ordinal);

        // New work finishes while the page stays open: the figures follow without a reload.
        await page.EvaluateExpressionAsync("window.__notReloaded = true");
        await db.Owner.ExecAsync("INSERT INTO tickets (id, body) SELECT g, 'more ' || g FROM generate_series(100, 103) AS g");
        await DrainAsync(db);
        var succeeded = await CountAsync(db, "succeeded");
        Assert.Equal(9L, succeeded);
        await page.WaitForFunctionAsync(
            $"() => window.__notReloaded === true && document.querySelector('{card} [data-figure=\"succeeded-24h\"]').textContent.replace(/,/g, '') === '{succeeded}'",
            new WaitForFunctionOptions { Timeout = WaitMs, PollingInterval = 100 });
        Assert.True(int.Parse(await page.EvaluateExpressionAsync<string>("document.getElementById('overview').dataset.refreshes"), CultureInfo.InvariantCulture) > 0);
        await Screenshots.TakeAsync(page, "overview");
    }

    [BrowserFact]
    public async Task Retrying_a_dead_letter_group_drains_it_and_the_action_is_logged_with_who_and_when()
    {
        await using var db = await SeededAsync(good: 2, bad: 3);
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "olivia:operator", "dead-letters");
        Assert.Equal("3", await TextAsync(page, "tr[data-group-task=\"public.tickets:ticket_category\"] [data-figure=\"count\"]"));
        await Screenshots.TakeAsync(page, "dead-letters");

        // The endpoint answers again; the operator retries the group.
        _fixture.Model.Responder = request => ModelReply.Json(DeterministicModel.Answer(request));
        await ClickAndWaitAsync(page, "tr[data-group-task=\"public.tickets:ticket_category\"] button[data-action=\"retry-group\"]");
        Assert.Contains("3 of 3", await TextAsync(page, "#flash"), StringComparison.Ordinal);
        Assert.Equal(3L, await CountAsync(db, "pending"));

        await DrainAsync(db);
        Assert.Equal(0L, await CountAsync(db, "failed"));
        await page.GoToAsync(host.Url + "dead-letters");
        await page.WaitForSelectorAsync("#no-dead-letters", new WaitForSelectorOptions { Timeout = WaitMs });
        Assert.Equal(5L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM tickets WHERE category IS NOT NULL"));

        // Logged in the action's transaction: who, when, as which role, what.
        Assert.Equal("olivia|retry|pgllm_console|3", await db.Owner.ScalarAsync<string>(
            "SELECT concat_ws('|', actor, action, role, detail->>'retried') FROM llm.console_action WHERE at > now() - interval '5 minutes'"));
        await page.GoToAsync(host.Url + "log");
        Assert.Equal("olivia", await TextAsync(page, "#actions tr[data-action-id] [data-figure=\"actor\"]"));
        Assert.Equal("retry", await TextAsync(page, "#actions tr[data-action-id] [data-figure=\"action\"]"));
        await Screenshots.TakeAsync(page, "action-log");
    }

    [BrowserFact]
    public async Task A_paused_task_s_jobs_wait_while_other_tasks_run_and_go_on_once_resumed()
    {
        await using var db = await SeededAsync(good: 1, bad: 0);
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "olivia:operator", string.Empty);
        await ClickAndWaitAsync(page, "[data-task=\"public.tickets:ticket_category\"] button[data-action=\"pause\"]");
        await page.WaitForSelectorAsync("[data-task=\"public.tickets:ticket_category\"] [data-figure=\"paused\"]", new WaitForSelectorOptions { Timeout = WaitMs });
        Assert.Equal("olivia", await db.Owner.ScalarAsync<string>("SELECT paused_by FROM llm.task WHERE name = 'public.tickets:ticket_category'"));

        using var stop = new CancellationTokenSource(Bound);
        using var worker = _fixture.CreateWorker(db.Owner);
        var running = worker.RunAsync(stop.Token);
        try
        {
            await db.Owner.ExecAsync("INSERT INTO tickets (id, body) VALUES (50, 'waits while paused')");
            await db.Owner.ExecAsync("INSERT INTO notes (id, body) VALUES (1, 'runs meanwhile')");
            // The note's job was claimed after the ticket's was enqueued and ran: the worker passed the paused task over.
            await WaitUntilAsync(async () => await db.Owner.ScalarAsync<string?>("SELECT state FROM llm.job WHERE task = 'public.notes:note_summary'") == "succeeded", "the note's job succeeds");
            Assert.Equal("pending", await db.Owner.ScalarAsync<string>("SELECT state FROM llm.job WHERE task = 'public.tickets:ticket_category' AND row_key = '{\"id\": 50}'"));
            await page.WaitForFunctionAsync(
                "() => document.querySelector('[data-task=\"public.tickets:ticket_category\"] [data-figure=\"pending\"]').textContent === '1'",
                new WaitForFunctionOptions { Timeout = WaitMs, PollingInterval = 100 });
            await Screenshots.TakeAsync(page, "overview-paused");

            await ClickAndWaitAsync(page, "[data-task=\"public.tickets:ticket_category\"] button[data-action=\"resume\"]");
            await WaitUntilAsync(async () => await db.Owner.ScalarAsync<string?>("SELECT state FROM llm.job WHERE task = 'public.tickets:ticket_category' AND row_key = '{\"id\": 50}'") == "succeeded", "the ticket's job succeeds once resumed");
        }
        finally
        {
            await stop.CancelAsync();
            await running;
        }

        Assert.Equal(["pause", "resume"], await db.Owner.ListAsync<string>("SELECT action FROM llm.console_action ORDER BY id"));
    }

    [BrowserFact]
    public async Task Searching_a_row_key_finds_its_jobs_and_opens_the_row_s_history()
    {
        await using var db = await SeededAsync(good: 3, bad: 1);
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "rita:reader", "jobs");
        await page.SelectAsync("#search select[name=task]", "public.tickets:ticket_category");
        await page.TypeAsync("#search input[name=key]", "4");
        await ClickAndWaitAsync(page, "#search button[type=submit]");
        var jobId = await db.Owner.ScalarAsync<long>("SELECT id FROM llm.job WHERE row_key = '{\"id\": 4}'");
        Assert.Equal("failed", await TextAsync(page, $"#jobs tr[data-job=\"{jobId}\"] [data-figure=\"state\"]"));
        await Screenshots.TakeAsync(page, "search");

        await ClickAndWaitAsync(page, "#row-history-link");
        Assert.Equal("{\"id\":4}", await TextAsync(page, "#row-key"));
        Assert.Contains("the model refused this ticket", await TextAsync(page, "#why [data-why-task=\"public.tickets:ticket_category\"]"), StringComparison.Ordinal);
        Assert.Equal("failed", await TextAsync(page, $"#jobs tr[data-job=\"{jobId}\"] [data-figure=\"state\"]"));
        await Screenshots.TakeAsync(page, "row-history");

        await page.GoToAsync(host.Url + "row?task=public.tickets:ticket_category&key=1");
        var answered = await TextAsync(page, "#why [data-why-task=\"public.tickets:ticket_category\"]");
        Assert.Contains("answered by job", answered, StringComparison.Ordinal);
        Assert.Contains(await db.Owner.ScalarAsync<string>("SELECT category FROM tickets WHERE id = 1"), answered, StringComparison.Ordinal);
    }

    [BrowserFact]
    public async Task Releasing_an_edited_cell_from_a_row_s_history_lets_the_next_job_write_it()
    {
        await using var db = await SeededAsync(good: 1, bad: 0);
        await db.Owner.ExecAsync("UPDATE tickets SET category = 'set by hand' WHERE id = 1");
        Assert.Equal(1L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.edited_cell WHERE column_name = 'category'"));
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "olivia:operator", "row?task=public.tickets:ticket_category&key=1");
        Assert.Contains("edited by someone else", await TextAsync(page, "#why [data-why-task=\"public.tickets:ticket_category\"]"), StringComparison.Ordinal);

        await ClickAndWaitAsync(page, "#edited tr[data-column=\"category\"] button[data-action=\"release-cell\"]");
        Assert.Contains("Cell category is released", await TextAsync(page, "#flash"), StringComparison.Ordinal);
        Assert.Equal(0L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.edited_cell"));
        Assert.Equal("olivia|release-cell|true", await db.Owner.ScalarAsync<string>("SELECT concat_ws('|', actor, action, detail->>'released') FROM llm.console_action"));
    }

    [BrowserFact]
    public async Task A_read_only_user_is_refused_an_action_and_nothing_is_done_or_logged()
    {
        await using var db = await SeededAsync(good: 1, bad: 2);
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "rita:reader", "dead-letters");
        Assert.Equal("read-only", await page.EvaluateExpressionAsync<string>("document.querySelector('[data-role]').dataset.role"));
        Assert.Equal(0, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('button[data-action]').length"));

        // The same form an operator posts, with a valid antiforgery token.
        var status = await page.EvaluateFunctionAsync<int>("""
            async (task) => {
              const meta = document.querySelector('meta[name=pgllm-antiforgery]');
              const form = new FormData();
              form.append(meta.dataset.field, meta.content);
              form.append('task', task);
              form.append('error', '');
              const response = await fetch('actions/retry-group', { method: 'POST', body: form, credentials: 'same-origin', redirect: 'manual' });
              return response.status;
            }
            """, "public.tickets:ticket_category");
        Assert.Equal(403, status);
        Assert.Equal(2L, await CountAsync(db, "failed"));
        Assert.Equal(0L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.console_action"));
    }

    [BrowserFact]
    public async Task Every_page_opens_and_the_work_and_endpoint_pages_show_what_the_queue_holds()
    {
        await using var db = await SeededAsync(good: 2, bad: 0);
        await db.Owner.ExecAsync("INSERT INTO llm.batch (model, state, lines) VALUES ('test-model', 'submitted', 2)");
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        await using var page = await OpenAsync(host, "olivia:operator", "endpoints");
        Assert.Equal("closed", await TextAsync(page, "#endpoints tr[data-endpoint] [data-figure=\"state\"]"));
        await Screenshots.TakeAsync(page, "endpoints");

        await page.GoToAsync(host.Url + "work");
        Assert.Equal("submitted", await TextAsync(page, "#batches tr[data-batch] [data-figure=\"state\"]"));
        await ClickAndWaitAsync(page, "#batches button[data-action=\"cancel-batch\"]", acceptDialog: true);
        Assert.NotNull(await db.Owner.ScalarAsync<DateTime?>("SELECT cancel_requested_at FROM llm.batch"));
        Assert.Equal("olivia", await db.Owner.ScalarAsync<string>("SELECT cancel_requested_by FROM llm.batch"));
        await Screenshots.TakeAsync(page, "work");
    }

    private async Task<TestDatabase> SeededAsync(int good, int bad)
    {
        var db = await _fixture.CreateDatabaseAsync();
        await db.Owner.ExecAsync(
            "INSERT INTO tickets (id, body) SELECT g, CASE WHEN g > $1 THEN 'bad ticket ' ELSE 'ticket ' END || g FROM generate_series(1, $2) AS g",
            good, good + bad);
        await DrainAsync(db);
        await db.Owner.ExecAsync("ANALYZE tickets");
        return db;
    }

    private async Task DrainAsync(TestDatabase db)
    {
        using var timeout = new CancellationTokenSource(Bound);
        using var worker = _fixture.CreateWorker(db.Owner);
        await worker.RunUntilIdleAsync(timeout.Token);
    }

    private static Task<long> CountAsync(TestDatabase db, string state) =>
        db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.job WHERE task = 'public.tickets:ticket_category' AND state = $1", state);

    private async Task<IPage> OpenAsync(ConsoleHost host, string user, string path)
    {
        var page = await _fixture.Browser!.NewPageAsync();
        await page.SetCookieAsync(new CookieParam { Name = "test-user", Value = user, Domain = "127.0.0.1", Path = "/" });
        var response = await page.GoToAsync(host.Url + path);
        Assert.Equal(System.Net.HttpStatusCode.OK, response.Status);
        return page;
    }

    private static async Task<string> TextAsync(IPage page, string selector)
    {
        try
        {
            var element = await page.WaitForSelectorAsync(selector, new WaitForSelectorOptions { Timeout = WaitMs });
            return (await element.EvaluateFunctionAsync<string>("e => e.textContent")).Trim();
        }
        catch (WaitTaskTimeoutException ex)
        {
            // The page as it was, to tell what went wrong.
            throw new InvalidOperationException($"{selector} not found on {page.Url}: {await page.EvaluateExpressionAsync<string>("document.body.innerText")}", ex);
        }
    }

    private static async Task<long> FigureAsync(IPage page, string card, string figure) =>
        long.Parse((await TextAsync(page, $"{card} [data-figure=\"{figure}\"]")).Replace(",", string.Empty, StringComparison.Ordinal), CultureInfo.InvariantCulture);

    private static async Task ClickAndWaitAsync(IPage page, string selector, bool acceptDialog = false)
    {
        await page.WaitForSelectorAsync(selector, new WaitForSelectorOptions { Timeout = WaitMs });
        if (acceptDialog)
        {
            page.Dialog += async (_, e) => await e.Dialog.Accept();
        }

        await Task.WhenAll(page.WaitForNavigationAsync(new NavigationOptions { Timeout = WaitMs }), page.ClickAsync(selector));
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(50);
        }
    }
}
