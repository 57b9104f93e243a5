using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Npgsql;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Batches;

/// <summary>
/// Writes a batch's input file: one request line per job the batch holds, each the very request the normal path
/// would send (<see cref="Completions.ModelCaller.RequestOf"/>), named by a custom id that carries the job, its
/// attempt and the hash of the inputs it was asked with (so the answer is written only while the row is unchanged).
/// Jobs are read a page at a time and lines streamed to disk: memory does not grow with the batch. Jobs with
/// nothing to ask (row gone, table drifted, prompt too large) are settled as the normal path settles them; jobs
/// past the file's byte limit are given back for the next batch.
/// </summary>
internal sealed class BatchRequestFile(PipelineContext context, BatchStore store, long maxBytes)
{
    /// <summary>The URL every line names: the batch's endpoint.</summary>
    public const string LineUrl = "/v1/chat/completions";

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, SkipValidation = true };

    /// <summary>The custom id of a job's line.</summary>
    public static string CustomIdOf(ClaimedJob job, string inputsHash) =>
        string.Create(CultureInfo.InvariantCulture, $"{job.Id}-{job.Attempt}-{inputsHash}");

    /// <summary>The job, attempt and inputs hash a custom id names; false for one PgLlm did not write.</summary>
    public static bool TryParse(string? customId, out long jobId, out int attempt, out string inputsHash)
    {
        jobId = 0;
        attempt = 0;
        inputsHash = string.Empty;
        var parts = customId?.Split('-', 3);
        if (parts is not { Length: 3 } || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out jobId)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out attempt))
        {
            return false;
        }

        inputsHash = parts[2];
        return true;
    }

    /// <summary>Writes the batch's lines to <paramref name="path"/>; the lines and bytes written.</summary>
    public async Task<(int Lines, long Bytes)> WriteAsync(BatchRow batch, string path, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        await using var writer = new Utf8JsonWriter(file, WriterOptions);
        var lines = 0;
        var full = false;
        await using var connection = await context.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        for (var after = 0L; ;)
        {
            var page = await store.JobsAsync(batch.Id, after, cancellationToken).ConfigureAwait(false);
            if (page.Count == 0)
            {
                break;
            }

            after = page[^1].Id;
            var claimed = await context.Queue.ReadClaimedAsync(connection, page, context.Registry.FindAsync).ConfigureAwait(false);
            foreach (var work in await context.Settler.PrepareAsync(claimed).ConfigureAwait(false))
            {
                if (full || file.Length + writer.BytesPending >= maxBytes)
                {
                    // Over the provider's file limit: the rest wait for the next batch, their attempt not spent.
                    full = true;
                    await context.Settler.ReleaseAsync(work.Job).ConfigureAwait(false);
                    continue;
                }

                lines += await WriteLineAsync(writer, file, batch.Model, work).ConfigureAwait(false) ? 1 : 0;
            }
        }

        await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        return (lines, file.Length);
    }

    /// <summary>One job's line; false (the job failed as the normal path fails it) when its request cannot be made.</summary>
    private async Task<bool> WriteLineAsync(Utf8JsonWriter writer, FileStream file, string model, CallWork work)
    {
        (List<Microsoft.Extensions.AI.ChatMessage> Messages, Microsoft.Extensions.AI.ChatOptions Options) request;
        try
        {
            request = context.Model.RequestOf(work.Task, work.Inputs.Values);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            await context.Settler.FailAsync(work.Job, ex).ConfigureAwait(false);
            return false;
        }

        writer.WriteStartObject();
        writer.WriteString("custom_id", CustomIdOf(work.Job, work.Inputs.Hash));
        writer.WriteString("method", "POST");
        writer.WriteString("url", LineUrl);
        writer.WritePropertyName("body");
        Completions.OpenAiCompatibleChatClient.WriteRequest(writer, model, request.Messages, request.Options);
        writer.WriteEndObject();
        await writer.FlushAsync(CancellationToken.None).ConfigureAwait(false);
        file.WriteByte((byte)'\n');
        writer.Reset();
        return true;
    }
}
