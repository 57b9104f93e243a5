using System.Text;
using System.Text.Json;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Batches;

/// <summary>
/// Settles a finished batch's output and error files, streamed line by line: an answer is validated and written
/// back exactly as a call's (the task's write-back function: stale inputs, edited cells, row versions, tokens and
/// their cost, at batch prices), through a <see cref="WriteBackBatcher"/> of the batch tier's queue; an error
/// line or an invalid answer is a failed attempt, retried or failed with its history as on the normal path.
/// </summary>
internal sealed class BatchResults(PipelineContext context, JobQueue batchQueue, JobSettler batchSettler, BatchStore store)
{
    /// <summary>Counts of one batch's lines settled.</summary>
    public sealed class Tally
    {
        public int Succeeded { get; set; }

        public int Failed { get; set; }
    }

    /// <summary>Settles the lines of the given files (either may be null); the lines that answered and that failed.</summary>
    public async Task<Tally> SettleAsync(BatchApiClient api, long batch, string? outputFileId, string? errorFileId, CancellationToken cancellationToken)
    {
        var jobs = await JobsOfAsync(batch, cancellationToken).ConfigureAwait(false);
        var tally = new Tally();
        using var writeBacks = new WriteBackBatcher(batchQueue, batchSettler.WrittenAsync, time: context.Time);
        try
        {
            foreach (var fileId in new[] { outputFileId, errorFileId })
            {
                if (fileId is not null)
                {
                    await SettleFileAsync(api, fileId, jobs, writeBacks, tally, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            // Every answer handed in is written before the batch is finished (its missing lines counted).
            await writeBacks.CompleteAndDrainAsync().ConfigureAwait(false);
        }

        return tally;
    }

    /// <summary>The jobs the batch holds, by id (a batch holds at most its line limit of them).</summary>
    private async Task<Dictionary<long, ClaimedJob>> JobsOfAsync(long batch, CancellationToken cancellationToken)
    {
        var jobs = new Dictionary<long, ClaimedJob>();
        for (var after = 0L; ;)
        {
            var page = await store.JobsAsync(batch, after, cancellationToken).ConfigureAwait(false);
            if (page.Count == 0)
            {
                return jobs;
            }

            page.ForEach(j => jobs[j.Id] = j);
            after = page[^1].Id;
        }
    }

    private async Task SettleFileAsync(
        BatchApiClient api, string fileId, Dictionary<long, ClaimedJob> jobs, WriteBackBatcher writeBacks, Tally tally, CancellationToken cancellationToken)
    {
        using var response = await api.OpenFileAsync(fileId, cancellationToken).ConfigureAwait(false);
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false, bufferSize: 1 << 16);
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            if (line.Length > 0)
            {
                await SettleLineAsync(line, jobs, writeBacks, tally).ConfigureAwait(false);
            }
        }
    }

    /// <summary>One result line: its job's answer written back, or its failure recorded. A line of no job the batch holds is passed over.</summary>
    private async Task SettleLineAsync(string line, Dictionary<long, ClaimedJob> jobs, WriteBackBatcher writeBacks, Tally tally)
    {
        using var document = JsonDocument.Parse(line);
        var root = document.RootElement;
        var customId = root.TryGetProperty("custom_id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString() : null;
        if (!BatchRequestFile.TryParse(customId, out var jobId, out var attempt, out var hash)
            || !jobs.Remove(jobId, out var job) || job.Attempt != attempt)
        {
            return;
        }

        var task = await context.Registry.FindAsync(job.Task, CancellationToken.None).ConfigureAwait(false);
        if (task is null)
        {
            await batchQueue.SkipAsync(job, $"task '{job.Task}' is not in llm.task (removed from the declarations?)", CancellationToken.None).ConfigureAwait(false);
            return;
        }

        var response = root.TryGetProperty("response", out var r) && r.ValueKind == JsonValueKind.Object ? r : default;
        var status = response.ValueKind == JsonValueKind.Object && response.TryGetProperty("status_code", out var s) && s.TryGetInt32(out var code) ? code : 0;
        var body = response.ValueKind == JsonValueKind.Object && response.TryGetProperty("body", out var b) ? Encoding.UTF8.GetBytes(b.GetRawText()) : [];
        if (status is >= 200 and < 300)
        {
            ModelAnswer answer;
            try
            {
                answer = ModelCaller.AnswerOf(task, OpenAiCompatibleChatClient.Parse(body), null);
            }
            catch (Exception ex) when (ex is InvalidAnswerException or InvalidOperationException)
            {
                tally.Failed++;
                await batchSettler.FailAsync(job, ex).ConfigureAwait(false);
                return;
            }

            tally.Succeeded++;
            await writeBacks.SubmitAsync(new WriteBack(task, job, hash, answer.Json, answer.InputTokens, answer.OutputTokens, answer.Model, false)).ConfigureAwait(false);
            return;
        }

        tally.Failed++;
        await batchSettler.FailAsync(job, LineError(root, status, body)).ConfigureAwait(false);
    }

    /// <summary>A failed line's error: the endpoint's own (its status and body), else the line's <c>error</c>.</summary>
    private static ModelEndpointException LineError(JsonElement root, int status, byte[] body)
    {
        if (status > 0)
        {
            return OpenAiCompatibleChatClient.ErrorOf(status, body);
        }

        var message = root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object
            && error.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        return new ModelEndpointException(500, "the batch's line failed: " + (message ?? "no error given"));
    }
}
