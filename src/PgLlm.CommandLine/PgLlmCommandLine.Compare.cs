using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Planning;

namespace PgLlm.Cli;

/// <summary><c>pgllm compare</c>: the current definition run on a sample of stale rows, compared with what they hold, nothing written back.</summary>
public sealed partial class PgLlmCommandLine
{
    private Command CreateCompareCommand()
    {
        var task = new Option<string>("--task", "-t") { Description = "The task to compare (see 'pgllm plan').", Required = true };
        var sample = new Option<int>("--sample", "-n") { Description = "How many stale rows to ask the model for.", DefaultValueFactory = _ => 20 };
        var json = new Option<bool>("--json") { Description = "Print the comparison as JSON (stable property names) for scripts." };
        var command = new Command(
            "compare",
            "Run the current definition on a sample of rows an older one wrote, without writing them: per target how often the new answer equals the old, invalid answers, tokens and cost. The answers stay in llm.compare_sample.");
        command.Options.Add(task);
        command.Options.Add(sample);
        command.Options.Add(json);
        SetAction(command, async (parseResult, cancellationToken) =>
        {
            var count = parseResult.GetValue(sample);
            if (count < 1)
            {
                WriteError("--sample must be at least 1.");
                return ExitUsage;
            }

            var options = ReadOptions(parseResult);
            await using var dataSource = OpenDataSource(options);
            var name = parseResult.GetValue(task)!;
            if (!await KnownTaskAsync(dataSource, name, cancellationToken).ConfigureAwait(false))
            {
                return ExitUsage;
            }

            var report = await CompareAsync(dataSource, options, name, count, cancellationToken).ConfigureAwait(false);
            if (parseResult.GetValue(json))
            {
                WriteRaw(CompareJson(report));
            }
            else
            {
                WriteComparison(report);
            }

            if (report.Sampled > 0 && report.Failed == report.Sampled)
            {
                WriteError($"every call failed, the first with: {report.FirstError}");
                return ExitError;
            }

            return ExitOk;
        });
        return command;
    }

    /// <summary>Runs the comparison through the worker's model access (endpoints, rate limits) without the answer cache: the model itself answers.</summary>
    private static async Task<CompareReport> CompareAsync(NpgsqlDataSource dataSource, PgLlmOptions options, string task, int sample, CancellationToken cancellationToken)
    {
        await RequireEndpointRunningAsync(dataSource, options, task, cancellationToken).ConfigureAwait(false);
        IChatClient chatClient;
        try
        {
            chatClient = ChatClientFactory.Create(options, null);
        }
        catch (InvalidOperationException ex)
        {
            throw new CommandLineException(ex.Message, ex);
        }

        using (chatClient)
        {
            return await DefinitionComparer.RunAsync(dataSource, chatClient, options, task, sample, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>A comparison does not call an endpoint the governor stopped (a wrong key, no quota): one line, exit code 1.</summary>
    private static async Task RequireEndpointRunningAsync(NpgsqlDataSource dataSource, PgLlmOptions options, string task, CancellationToken cancellationToken)
    {
        if (await DefinitionComparer.StoppedEndpointAsync(dataSource, options, task, cancellationToken).ConfigureAwait(false) is { } stopped)
        {
            throw new CommandLineException(
                $"endpoint {stopped.Endpoint} is stopped ({stopped.Reason}): fix it, then run 'pgllm endpoint resume {stopped.Endpoint}' and compare again.");
        }
    }

    private void WriteComparison(CompareReport report)
    {
        if (report.Sampled == 0)
        {
            Say($"No stale rows of {report.Task}: every filled row was written by its current definition (nothing to compare).");
            return;
        }

        WriteRaw(string.Create(CultureInfo.InvariantCulture, $"{report.Task}: {report.Sampled} stale rows under the current definition"));
        WriteFigure("run", string.Create(CultureInfo.InvariantCulture, $"{report.RunId} (definition {report.DefinitionHash[..Math.Min(12, report.DefinitionHash.Length)]})"));
        foreach (var target in report.Targets)
        {
            WriteFigure(target.Target, Agreement(target), target.Exact ? "exact" : "text similarity");
        }

        WriteFigure("invalid", string.Create(CultureInfo.InvariantCulture, $"{report.Invalid} of {report.Sampled} answers ({report.InvalidRate:0%})"));
        WriteFigure("failed calls", report.Failed.ToString(CultureInfo.InvariantCulture), report.FirstError is null || report.Failed == 0 ? null : "first: " + report.FirstError);
        WriteFigure("tokens", string.Create(CultureInfo.InvariantCulture, $"{report.InputTokens:N0} in, {report.OutputTokens:N0} out"));
        WriteFigure("cost", report.EstimatedCost is { } cost ? cost.ToString("0.0000", CultureInfo.InvariantCulture) : "no prices", report.EstimatedCost is null ? "PgLlm:Prices or llm.model_price" : null);
        WriteRaw("Nothing was written to the task's table or llm.job. The answers:");
        WriteRaw(string.Create(CultureInfo.InvariantCulture, $"  SELECT * FROM llm.compare_sample WHERE run_id = {report.RunId};"));
        if (report.Targets.Any(t => !t.Exact))
        {
            WriteRaw("Text similarity:");
            WriteRaw("  " + AnswerAgreement.TextMeasure + ".");
        }
    }

    private static string Agreement(TargetAgreement target) => target switch
    {
        { Compared: 0 } => "no valid answer to compare",
        { Exact: true } => string.Create(CultureInfo.InvariantCulture, $"{target.Equal} of {target.Compared} equal ({(double)target.Equal / target.Compared:0%})"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{target.MeanAgreement:0.00} similar, {target.Equal} of {target.Compared} equal"),
    };

    /// <summary>
    /// The comparison as JSON: <c>{"runId","task","definitionHash","sampled","invalid","invalidRate","failed","firstError",
    /// "inputTokens","outputTokens","estimatedCost","textMeasure","targets":[{"target","kind","exact","compared","equal",
    /// "agreement"}]}</c>; <c>agreement</c> is the mean (0 to 1), null when no answer was valid; <c>estimatedCost</c> null without prices.
    /// </summary>
    internal static string CompareJson(CompareReport report)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteNumber("runId", report.RunId);
            json.WriteString("task", report.Task);
            json.WriteString("definitionHash", report.DefinitionHash);
            json.WriteNumber("sampled", report.Sampled);
            json.WriteNumber("invalid", report.Invalid);
            json.WriteNumber("invalidRate", Math.Round(report.InvalidRate, 4));
            json.WriteNumber("failed", report.Failed);
            json.WriteString("firstError", report.FirstError);
            json.WriteNumber("inputTokens", report.InputTokens);
            json.WriteNumber("outputTokens", report.OutputTokens);
            WriteNumberOrNull(json, "estimatedCost", report.EstimatedCost);
            json.WriteString("textMeasure", AnswerAgreement.TextMeasure);
            json.WriteStartArray("targets");
            foreach (var target in report.Targets)
            {
                json.WriteStartObject();
                json.WriteString("target", target.Target);
                json.WriteString("kind", target.Kind);
                json.WriteBoolean("exact", target.Exact);
                json.WriteNumber("compared", target.Compared);
                json.WriteNumber("equal", target.Equal);
                WriteNumberOrNull(json, "agreement", target.MeanAgreement is { } mean ? (decimal)Math.Round(mean, 4) : null);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
