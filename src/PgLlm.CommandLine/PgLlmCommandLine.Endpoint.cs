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
        var list = new Command("list", "Show each endpoint's state, why, and since when.");
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

            json.WriteEndObject();
        }

        json.WriteEndArray();
    }
}
