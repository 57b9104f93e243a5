using System.Net;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>The console over plain HTTP: the host's authorization guards every page, an action needs its antiforgery token.</summary>
[Collection(ConsoleGroup.Name)]
public sealed class ConsoleHttpTests(ConsoleFixture fixture)
{
    [Fact]
    public async Task No_page_is_served_to_a_user_the_host_did_not_sign_in()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        using var http = new HttpClient { BaseAddress = host.Url };

        foreach (var page in new[] { string.Empty, "overview/fragment", "dead-letters", "log" })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync(new Uri(page, UriKind.Relative))).StatusCode);
        }
    }

    [Fact]
    public async Task An_operator_s_action_without_its_antiforgery_token_is_refused_and_nothing_is_done_or_logged()
    {
        await using var db = await fixture.CreateDatabaseAsync();
        await using var host = await ConsoleFixture.StartConsoleAsync(db);
        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = host.Url };
        http.DefaultRequestHeaders.Add("Cookie", "test-user=olivia:operator");

        using var form = new FormUrlEncodedContent(new Dictionary<string, string> { ["task"] = "public.tickets:ticket_category" });
        var response = await http.PostAsync(new Uri("actions/pause", UriKind.Relative), form);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Null(await db.Owner.ScalarAsync<DateTime?>("SELECT paused_at FROM llm.task WHERE name = 'public.tickets:ticket_category'"));
        Assert.Equal(0L, await db.Owner.ScalarAsync<long>("SELECT count(*) FROM llm.console_action"));
    }
}
