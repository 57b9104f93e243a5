using System.Globalization;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using PgLlm.OperationsConsole;

namespace Microsoft.AspNetCore.Builder
{
    /// <summary>Maps PgLlm's operations console into an ASP.NET Core application.</summary>
    public static class PgLlmConsoleEndpointExtensions
    {
        /// <summary>
        /// Serves the console under <paramref name="prefix"/> (for instance <c>/pgllm</c>). Nothing is served unless this is
        /// called. Protect it with the host's authorization: <c>app.MapPgLlmConsole("/pgllm").RequireAuthorization("ops")</c>;
        /// actions further need <see cref="PgLlmConsoleOptions.OperatorPolicy"/> and an antiforgery token, and are logged.
        /// </summary>
        /// <returns>The console's route group, for conventions such as <c>RequireAuthorization</c>.</returns>
        public static RouteGroupBuilder MapPgLlmConsole(this IEndpointRouteBuilder endpoints, string prefix = "/pgllm")
        {
            ArgumentNullException.ThrowIfNull(endpoints);
            ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
            var group = endpoints.MapGroup(prefix);
            group.MapGet("/", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsolePages.OverviewAsync));
            group.MapGet("/overview/fragment", async (HttpContext c, CancellationToken ct) =>
            {
                var request = await ConsoleRequest.CreateAsync(c, prefix).ConfigureAwait(false);
                var html = await ConsolePages.OverviewFragmentAsync(request, DataSource(c), c.RequestAborted).ConfigureAwait(false);
                return Results.Content(html, "text/html; charset=utf-8");
            });
            group.MapGet("/endpoints", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsolePages.EndpointsAsync));
            group.MapGet("/dead-letters", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsolePages.DeadLettersAsync));
            group.MapGet("/jobs", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsoleSearchPages.JobsAsync));
            group.MapGet("/row", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsoleSearchPages.RowAsync));
            group.MapGet("/work", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsolePages.WorkAsync));
            group.MapGet("/log", (HttpContext c, CancellationToken ct) => Page(c, prefix, ConsolePages.LogAsync));
            group.MapPost("/actions/{action}", (HttpContext c, string action) => ConsoleActionEndpoint.HandleAsync(c, prefix, action)).DisableAntiforgery();
            return group;
        }

        private static async Task<IResult> Page(HttpContext context, string prefix, Func<ConsoleRequest, NpgsqlDataSource, CancellationToken, Task<IResult>> render)
        {
            var request = await ConsoleRequest.CreateAsync(context, prefix).ConfigureAwait(false);
            return await render(request, DataSource(context), context.RequestAborted).ConfigureAwait(false);
        }

        internal static NpgsqlDataSource DataSource(HttpContext context) => context.RequestServices.GetRequiredService<ConsoleDatabase>().DataSource;
    }
}

namespace Microsoft.Extensions.DependencyInjection
{
    /// <summary>Registers PgLlm's operations console.</summary>
    public static class PgLlmConsoleServiceCollectionExtensions
    {
        /// <summary>
        /// Adds the console's services (its database, antiforgery) with its settings: the database (a connection string whose
        /// login is a member of <c>pgllm_console</c>), the operator policy, read-only, the overview's refresh interval.
        /// Then map it with <c>app.MapPgLlmConsole("/pgllm")</c>.
        /// </summary>
        public static IServiceCollection AddPgLlmConsole(this IServiceCollection services, Action<PgLlmConsoleOptions> configure)
        {
            ArgumentNullException.ThrowIfNull(services);
            ArgumentNullException.ThrowIfNull(configure);
            services.Configure(configure);
            services.AddAntiforgery();
            services.AddAuthorization();
            services.AddSingleton<ConsoleDatabase>();
            return services;
        }
    }
}

namespace PgLlm.OperationsConsole
{
    /// <summary>The actions' endpoint: operator only, antiforgery token checked, logged.</summary>
    internal static class ConsoleActionEndpoint
    {
        public static async Task<IResult> HandleAsync(HttpContext context, string prefix, string action)
        {
            var request = await ConsoleRequest.CreateAsync(context, prefix).ConfigureAwait(false);
            if (!request.IsOperator)
            {
                return Results.Text(request.Options.ReadOnly ? "The console is read-only." : "Only operators may act.", statusCode: StatusCodes.Status403Forbidden);
            }

            try
            {
                await context.RequestServices.GetRequiredService<IAntiforgery>().ValidateRequestAsync(context).ConfigureAwait(false);
            }
            catch (AntiforgeryValidationException)
            {
                return Results.Text("The form's antiforgery token is missing or not valid: reload the page.", statusCode: StatusCodes.Status400BadRequest);
            }

            var form = await context.Request.ReadFormAsync(context.RequestAborted).ConfigureAwait(false);
            var back = IsConsolePath(form["return"].ToString(), request.Base) ? form["return"].ToString() : request.Base + "/";
            string message;
            var failed = false;
            try
            {
                message = await RunAsync(request, action, form, context.RequestAborted).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is PostgresException or FormatException or ArgumentException)
            {
                message = ex is PostgresException pg ? pg.MessageText : ex.Message;
                failed = true;
            }

            if (message.Length == 0)
            {
                return Results.NotFound();
            }

            var path = back.Split('?')[0];
            var query = Microsoft.AspNetCore.WebUtilities.QueryHelpers.ParseQuery(back.Contains('?', StringComparison.Ordinal) ? back[back.IndexOf('?', StringComparison.Ordinal)..] : string.Empty)
                .Where(p => p.Key is not ("msg" or "error"))
                .Select(p => KeyValuePair.Create(p.Key, (string?)p.Value.ToString()))
                .Append(KeyValuePair.Create("msg", (string?)message));
            if (failed)
            {
                query = query.Append(KeyValuePair.Create("error", (string?)"1"));
            }

            return Results.Redirect(Microsoft.AspNetCore.WebUtilities.QueryHelpers.AddQueryString(path, query));
        }

        private static async Task<string> RunAsync(ConsoleRequest request, string action, IFormCollection form, CancellationToken cancellationToken)
        {
            var db = PgLlmConsoleEndpointExtensions.DataSource(request.Context);
            var actor = request.Actor;
            switch (action)
            {
                case "retry-job":
                    var id = long.Parse(form["id"].ToString(), NumberStyles.None, CultureInfo.InvariantCulture);
                    var one = await ConsoleActions.RetryAsync(db, actor, [id], "job " + id.ToString(CultureInfo.InvariantCulture), cancellationToken).ConfigureAwait(false);
                    return one == 1 ? $"Job {id} is pending again." : $"Job {id} was not retried (no longer failed, or its row has a pending job).";
                case "retry-group":
                    var task = Required(form, "task");
                    var error = form["no-error"] == "1" ? null : form["error"].ToString();
                    var ids = await ConsoleQueries.ReadFailureGroupIdsAsync(db, task, error, cancellationToken).ConfigureAwait(false);
                    var retried = await ConsoleActions.RetryAsync(db, actor, ids, task + ": " + (error ?? "(no error recorded)"), cancellationToken).ConfigureAwait(false);
                    return $"{retried} of {ids.Length} dead letters of {task} are pending again.";
                case "pause":
                    var paused = Required(form, "task");
                    return await ConsoleActions.PauseAsync(db, actor, paused, cancellationToken).ConfigureAwait(false) ? $"Task {paused} is paused." : $"Task {paused} was paused already.";
                case "resume":
                    var resumed = Required(form, "task");
                    return await ConsoleActions.ResumeAsync(db, actor, resumed, cancellationToken).ConfigureAwait(false) ? $"Task {resumed} is resumed." : $"Task {resumed} was not paused.";
                case "release-cell":
                    var column = Required(form, "column");
                    var released = await ConsoleActions.ReleaseCellAsync(db, actor, Required(form, "table"), Required(form, "key"), column, cancellationToken).ConfigureAwait(false);
                    return released ? $"Cell {column} is released: the row's next job writes it." : $"Cell {column} was not marked edited.";
                case "cancel-batch":
                    var batch = long.Parse(form["id"].ToString(), NumberStyles.None, CultureInfo.InvariantCulture);
                    var state = await ConsoleActions.CancelBatchAsync(db, actor, batch, cancellationToken).ConfigureAwait(false);
                    return $"Batch {batch}: cancel asked (state {state}).";
                default:
                    return string.Empty;
            }
        }

        /// <summary>Whether <paramref name="path"/> is a local path under the console (never another host: no open redirect).</summary>
        private static bool IsConsolePath(string path, string basePath) =>
            path.StartsWith(basePath + "/", StringComparison.Ordinal)
            && !path.StartsWith("//", StringComparison.Ordinal) && !path.StartsWith("/\\", StringComparison.Ordinal)
            && !path.Contains("://", StringComparison.Ordinal);

        private static string Required(IFormCollection form, string name) =>
            form[name].ToString() is { Length: > 0 } value ? value : throw new ArgumentException($"the form has no {name}");
    }
}
