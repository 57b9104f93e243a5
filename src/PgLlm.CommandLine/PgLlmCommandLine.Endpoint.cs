using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PgLlm.Observability;
using Spectre.Console;

namespace PgLlm.Cli;

/// <summary><c>pgllm endpoint list</c> and <c>pgllm endpoint resume NAME</c>: the endpoint governor's shared state.</summary>
public sealed partial class PgLlmCommandLine
{
    private Command CreateEndpointCommand()
    {
        var command = new Command("endpoint", "Show the model endpoints' states (closed, open: circuit breaker, stopped: auth or quota) and resume a stopped one.");
        var list = new Command("list", "Show each endpoint's state, why and since when, and its shared rate limits with their use in the last minute.");
        SetAction(list, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var endpoints = await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
            if (endpoints.Count == 0)
            {
                Say($"No endpoint has a state yet (a worker records its endpoints when it starts).");
                return ExitOk;
            }

            WriteEndpoints(endpoints);
            return ExitOk;
        });
        var name = new Argument<string>("name") { Description = "The endpoint: 'default', or a name under PgLlm:Endpoints (see 'pgllm endpoint list')." };
        var resume = new Command("resume", "Let the workers call a stopped (or open) endpoint again, e.g. after fixing its key or topping up its quota.");
        resume.Arguments.Add(name);
        SetAction(resume, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var endpoint = parseResult.GetValue(name)!;
            var before = await EndpointStatus.ResumeAsync(dataSource, endpoint, cancellationToken).ConfigureAwait(false);
            if (before is null)
            {
                var known = await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
                throw new CommandLineException(known.Count == 0
                    ? $"unknown endpoint '{endpoint}': no endpoint has a state yet."
                    : $"unknown endpoint '{endpoint}'. Known endpoints: {string.Join(", ", known.Select(e => e.Endpoint))}.");
            }

            if (before == "closed")
            {
                Say($"Endpoint {endpoint} was not stopped: nothing to resume.");
            }
            else
            {
                Say($"[green]Resumed endpoint {endpoint}[/] (was {before}): the workers claim its jobs again within a second or two.");
            }

            return ExitOk;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(resume);
        return command;
    }

    /// <summary>One line per endpoint: its name, state, since when, and why (the provider's message, key redacted).</summary>
    private void WriteEndpoints(IReadOnlyList<EndpointStatus> endpoints)
    {
        foreach (var endpoint in endpoints)
        {
            var since = endpoint.Since.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
            var probe = endpoint.State == "open" && endpoint.NextProbeAt is { } next
                ? ", next probe " + next.UtcDateTime.ToString("HH:mm:ss", CultureInfo.InvariantCulture) + " UTC"
                : string.Empty;
            var why = endpoint.State == "closed" || endpoint.Reason is null ? string.Empty : ": " + endpoint.Reason;
            var hint = endpoint.State == "stopped" ? $" (resume with 'pgllm endpoint resume {endpoint.Endpoint}')" : string.Empty;
            var colour = endpoint.State switch
            {
                "stopped" => "red",
                "open" => "yellow",
                _ => "green",
            };
            Say($"Endpoint {endpoint.Endpoint}: [{colour}]{endpoint.State}[/] since {since} UTC{probe}{why}{hint}");
            WriteRateLimits(endpoint);
        }
    }

    /// <summary>Under an endpoint: its shared rate limits, each with what the workers were granted in the last minute, and a 429 pause.</summary>
    private void WriteRateLimits(EndpointStatus endpoint)
    {
        foreach (var limit in endpoint.RateLimits)
        {
            var perMinute = limit.PerMinute.ToString("N0", CultureInfo.InvariantCulture);
            var used = limit.UsedLastMinute.ToString("N0", CultureInfo.InvariantCulture);
            Say($"  rate limit: {perMinute} {limit.Kind}/min, {used} granted in the last minute");
        }

        if (endpoint.PausedUntil is { } until)
        {
            Say($"  [yellow]paused[/] after a 429 until {until.UtcDateTime.ToString("HH:mm:ss", CultureInfo.InvariantCulture)} UTC");
        }
    }

    private static void WriteEndpointsJson(Utf8JsonWriter json, IReadOnlyList<EndpointStatus> endpoints)
    {
        json.WriteStartArray("endpoints");
        foreach (var endpoint in endpoints)
        {
            json.WriteStartObject();
            json.WriteString("endpoint", endpoint.Endpoint);
            json.WriteString("state", endpoint.State);
            json.WriteString("reason", endpoint.Reason);
            json.WriteString("since", endpoint.Since);
            json.WriteNumber("consecutiveFailures", endpoint.ConsecutiveFailures);
            if (endpoint.NextProbeAt is { } next)
            {
                json.WriteString("nextProbeAt", next);
            }
            else
            {
                json.WriteNull("nextProbeAt");
            }

            if (endpoint.PausedUntil is { } until)
            {
                json.WriteString("pausedUntil", until);
            }
            else
            {
                json.WriteNull("pausedUntil");
            }

            json.WriteStartArray("rateLimits");
            foreach (var limit in endpoint.RateLimits)
            {
                json.WriteStartObject();
                json.WriteString("kind", limit.Kind);
                json.WriteNumber("perMinute", limit.PerMinute);
                json.WriteNumber("usedLastMinute", limit.UsedLastMinute);
                json.WriteEndObject();
            }

            json.WriteEndArray();

            json.WriteEndObject();
        }

        json.WriteEndArray();
    }
}
