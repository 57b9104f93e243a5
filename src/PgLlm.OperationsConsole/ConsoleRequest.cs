using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using static PgLlm.OperationsConsole.Html;

namespace PgLlm.OperationsConsole;

/// <summary>One request to the console: where it is mapped, who asks, whether they may act, and the page's frame.</summary>
internal sealed class ConsoleRequest
{
    private ConsoleRequest(HttpContext context, PgLlmConsoleOptions options, string basePath, bool isOperator, string actor)
    {
        Context = context;
        Options = options;
        Base = basePath;
        IsOperator = isOperator;
        Actor = actor;
    }

    public HttpContext Context { get; }

    public PgLlmConsoleOptions Options { get; }

    /// <summary>The path the console is mapped at, without a trailing slash.</summary>
    public string Base { get; }

    public bool IsOperator { get; }

    public string Actor { get; }

    public string RoleName => IsOperator ? "operator" : "read-only";

    public static async Task<ConsoleRequest> CreateAsync(HttpContext context, string prefix)
    {
        var options = context.RequestServices.GetRequiredService<IOptions<PgLlmConsoleOptions>>().Value;
        var basePath = (context.Request.PathBase + prefix).ToString().TrimEnd('/');
        var isOperator = !options.ReadOnly;
        if (isOperator && options.OperatorPolicy is { Length: > 0 } policy)
        {
            var authorization = context.RequestServices.GetRequiredService<IAuthorizationService>();
            isOperator = (await authorization.AuthorizeAsync(context.User, policy).ConfigureAwait(false)).Succeeded;
        }

        var actor = context.User.Identity is { IsAuthenticated: true, Name: { Length: > 0 } name } ? name : options.AnonymousActor;
        return new ConsoleRequest(context, options, basePath, isOperator, actor);
    }

    /// <summary>The hidden antiforgery field of a form (and the cookie that goes with it).</summary>
    public string TokenField()
    {
        var tokens = Context.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(Context);
        return $"<input type=\"hidden\" name=\"{E(tokens.FormFieldName)}\" value=\"{E(tokens.RequestToken)}\">";
    }

    /// <summary>An action's form: one button posting <paramref name="fields"/> to <c>actions/NAME</c>; nothing for a read-only user.</summary>
    public string ActionButton(string action, string label, IReadOnlyDictionary<string, string> fields, string? confirm = null)
    {
        if (!IsOperator)
        {
            return string.Empty;
        }

        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<form class=\"inline\" method=\"post\" action=\"{E(Base)}/actions/{E(action)}\"");
        if (confirm is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $" onsubmit=\"return confirm('{E(confirm.Replace("'", "\\'", StringComparison.Ordinal))}')\"");
        }

        sb.Append('>').Append(TokenField());
        sb.Append(CultureInfo.InvariantCulture, $"<input type=\"hidden\" name=\"return\" value=\"{E(Context.Request.PathBase + Context.Request.Path + Context.Request.QueryString.ToString())}\">");
        foreach (var (name, value) in fields)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<input type=\"hidden\" name=\"{E(name)}\" value=\"{E(value)}\">");
        }

        sb.Append(CultureInfo.InvariantCulture, $"<button type=\"submit\" data-action=\"{E(action)}\">{E(label)}</button></form>");
        return sb.ToString();
    }

    /// <summary>The page: the frame (navigation, who, flash message) around <paramref name="body"/>.</summary>
    public IResult Page(string title, string current, string body)
    {
        var tokens = Context.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(Context);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        sb.Append(CultureInfo.InvariantCulture, $"<title>{E(title)} · PgLlm</title><style>{Style}</style>");
        sb.Append(CultureInfo.InvariantCulture, $"<meta name=\"pgllm-antiforgery\" data-field=\"{E(tokens.FormFieldName)}\" content=\"{E(tokens.RequestToken)}\"></head><body><header><strong>PgLlm</strong>");
        foreach (var (path, label) in Navigation)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<a href=\"{E(Base)}/{path}\"{(path == current ? " class=\"on\"" : string.Empty)}>{E(label)}</a>");
        }

        sb.Append(CultureInfo.InvariantCulture, $"<span class=\"who\" data-role=\"{RoleName}\">{E(Actor)} · {RoleName}</span></header><main><h1>{E(title)}</h1>");
        if (Context.Request.Query["msg"].ToString() is { Length: > 0 } message)
        {
            var error = Context.Request.Query["error"] == "1";
            sb.Append(CultureInfo.InvariantCulture, $"<div class=\"flash{(error ? " error" : string.Empty)}\" id=\"flash\">{E(message)}</div>");
        }

        sb.Append(body).Append("</main></body></html>");
        return Results.Content(sb.ToString(), "text/html; charset=utf-8");
    }

    private static readonly (string Path, string Label)[] Navigation =
    [
        (string.Empty, "Overview"), ("endpoints", "Endpoints"), ("dead-letters", "Dead letters"), ("jobs", "Search"), ("work", "Work in progress"), ("log", "Action log"),
    ];
}
