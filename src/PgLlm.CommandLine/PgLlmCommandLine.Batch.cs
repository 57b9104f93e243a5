using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PgLlm.Observability;

namespace PgLlm.Cli;

/// <summary><c>pgllm batch list</c> and <c>pgllm batch cancel ID</c>: the batch tier's batches.</summary>
public sealed partial class PgLlmCommandLine
{
    private Command CreateBatchCommand()
    {
        var command = new Command("batch", "Show the batch tier's batches (jobs sent through the provider's Batch API) and cancel one.");
        var list = new Command("list", "Show the batches in flight and those finished in the last day: state, lines answered, failed and missing, age and expected end.");
        SetAction(list, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var batches = await BatchStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
            if (batches.Count == 0)
            {
                Say($"No batch in flight or finished in the last day.");
                return ExitOk;
            }

            WriteBatches(batches, DateTimeOffset.UtcNow);
            return ExitOk;
        });
        var id = new Argument<long>("id") { Description = "The batch's id (see 'pgllm batch list')." };
        var cancel = new Command("cancel", "Cancel a batch: a worker cancels it at the provider, writes what was answered and gives the other jobs back to pending (their attempt not spent).");
        cancel.Arguments.Add(id);
        SetAction(cancel, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var batch = parseResult.GetValue(id);
            var state = await BatchStatus.CancelAsync(dataSource, batch, null, cancellationToken).ConfigureAwait(false)
                ?? throw new CommandLineException($"unknown batch {batch.ToString(CultureInfo.InvariantCulture)} (see 'pgllm batch list').");
            if (state is "done" or "expired" or "cancelled" or "failed")
            {
                Say($"Batch {batch} has already ended ({state}): nothing to cancel.");
            }
            else
            {
                Say($"[green]Cancel requested[/] for batch {batch} (was {state}): a worker cancels it within its next poll.");
            }

            return ExitOk;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(cancel);
        return command;
    }

    /// <summary>One line per batch: id, state, lines and their outcome, age and (in flight) the expected end.</summary>
    private void WriteBatches(IReadOnlyList<BatchStatus> batches, DateTimeOffset now)
    {
        foreach (var batch in batches)
        {
            var colour = batch.State switch
            {
                "done" => "green",
                "failed" or "expired" => "red",
                "cancelled" => "yellow",
                _ => "blue",
            };
            var age = FormatAge((batch.FinishedAt ?? now) - batch.CreatedAt);
            var expected = batch.Open && batch.ExpectedBy is { } by ? ", due by " + by.UtcDateTime.ToString("MM-dd HH:mm", CultureInfo.InvariantCulture) + " UTC" : string.Empty;
            var cancelling = batch.CancelRequested && batch.Open ? " (cancel requested)" : string.Empty;
            Say($"Batch {batch.Id} [{colour}]{batch.State}[/]{cancelling}: {batch.Lines} lines, {batch.Succeeded} answered, {batch.Failed} failed, {batch.Missing} missing; {age}{expected}");
            if (batch.Error is { } error)
            {
                Say($"  {error}");
            }
        }
    }

    private static string FormatAge(TimeSpan age) =>
        age.TotalHours >= 1 ? $"{(int)age.TotalHours}h {age.Minutes}m" : age.TotalMinutes >= 1 ? $"{(int)age.TotalMinutes}m {age.Seconds}s" : $"{Math.Max(0, (int)age.TotalSeconds)}s";

    private static void WriteBatchesJson(Utf8JsonWriter json, IReadOnlyList<BatchStatus> batches)
    {
        json.WriteStartArray("batches");
        foreach (var batch in batches)
        {
            json.WriteStartObject();
            json.WriteNumber("id", batch.Id);
            json.WriteString("endpoint", batch.Endpoint);
            json.WriteString("model", batch.Model);
            json.WriteString("state", batch.State);
            json.WriteString("providerStatus", batch.ProviderStatus);
            json.WriteNumber("lines", batch.Lines);
            json.WriteNumber("succeeded", batch.Succeeded);
            json.WriteNumber("failed", batch.Failed);
            json.WriteNumber("missing", batch.Missing);
            json.WriteString("createdAt", batch.CreatedAt);
            WriteTime(json, "submittedAt", batch.SubmittedAt);
            WriteTime(json, "expectedBy", batch.ExpectedBy);
            WriteTime(json, "finishedAt", batch.FinishedAt);
            json.WriteBoolean("cancelRequested", batch.CancelRequested);
            json.WriteString("error", batch.Error);
            json.WriteEndObject();
        }

        json.WriteEndArray();
    }

    private static void WriteTime(Utf8JsonWriter json, string name, DateTimeOffset? value)
    {
        if (value is { } time)
        {
            json.WriteString(name, time);
        }
        else
        {
            json.WriteNull(name);
        }
    }
}
