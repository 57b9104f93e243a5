using System.Threading.Channels;
using PgLlm.Completions;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// The second stage of a lane: one of its <see cref="EndpointLane.Concurrency"/> runners, each making one model
/// call at a time with no transaction open. A runner takes the next job from the lane's hand-off as soon as its
/// call ends (on the same thread: a call that ends starts the next), frees the job's slot, and hands the answer
/// to the write-back stage, waiting only while that stage's queue is full. A failed call is recorded as a
/// failed attempt. Once the worker stops, jobs not yet started are given back; calls in flight run on until
/// the jobs' token is cancelled (after the shutdown grace), and their jobs are given back too.
/// </summary>
internal sealed class CallRunner(EndpointLane lane, PipelineContext context, WriteBackBatcher writeBacks, EndpointGovernor governor)
{
    private int _ran;

    /// <summary>Jobs this runner ran (called the model for, or tried to).</summary>
    public int Ran => _ran;

    /// <summary>Runs jobs until the lane's hand-off is completed and empty.</summary>
    public async Task RunAsync(CancellationToken stoppingToken, CancellationToken jobsToken)
    {
        var reader = lane.Jobs.Reader;
        while (await NextAsync(reader).ConfigureAwait(false) is { } work)
        {
            if (stoppingToken.IsCancellationRequested)
            {
                // Claimed ahead and never started: given back without spending its attempt.
                await context.Settler.ReleaseAsync(work.Job).ConfigureAwait(false);
                lane.Slots.Release();
                continue;
            }

            _ran++;
            await RunAsync(work, jobsToken).ConfigureAwait(false);
        }
    }

    /// <summary>The next job; null once the hand-off is completed and empty.</summary>
    private static async ValueTask<CallWork?> NextAsync(ChannelReader<CallWork> reader)
    {
        if (reader.TryRead(out var work))
        {
            return work;
        }

        try
        {
            // A reader blocked here is handed the next job directly (no other runner wakes for it).
            return await reader.ReadAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            return null;
        }
    }

    private async Task RunAsync(CallWork work, CancellationToken jobsToken)
    {
        var (job, task, inputs) = work;
        if (!governor.Allows(lane, job.Id))
        {
            // Claimed before the endpoint was stopped or opened: given back without a call or a spent attempt.
            await context.Settler.ReleaseAsync(job).ConfigureAwait(false);
            lane.Slots.Release();
            return;
        }

        ModelAnswer answer;
        lane.CallStarted();
        try
        {
            answer = await CallAsync(task, inputs, jobsToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (jobsToken.IsCancellationRequested)
        {
            await context.Settler.ReleaseAsync(job).ConfigureAwait(false);
            lane.CallEnded();
            return;
        }
        catch (Exception ex)
        {
            // The slot is given back once the failure is recorded, so a drain until idle sees the job settled.
            // A failure of the endpoint (stopped, or its breaker open) gives the job back without spending its attempt.
            if (await governor.FailedAsync(lane, job.Id, ex).ConfigureAwait(false))
            {
                await context.Settler.ReleaseAsync(job).ConfigureAwait(false);
            }
            else
            {
                await context.Settler.FailAsync(job, ex).ConfigureAwait(false);
            }

            lane.CallEnded();
            return;
        }

        // Free unless failures were counted or this was a probe (then the endpoint's breaker closes).
        await governor.SucceededAsync(lane, job.Id).ConfigureAwait(false);
        // The slot is the endpoint's: freed as soon as the call ends, so the next claim overlaps this job's write-back.
        lane.CallEnded();
        await writeBacks.SubmitAsync(new WriteBack(task, job, inputs.Hash, answer.Json, answer.InputTokens, answer.OutputTokens, answer.Model, answer.CacheHit)).ConfigureAwait(false);
    }

    private async Task<ModelAnswer> CallAsync(TaskDefinition task, JobInputs inputs, CancellationToken jobsToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(jobsToken);
        timeout.CancelAfter(context.Options.ModelTimeout);
        try
        {
            return await context.Model.AskAsync(task, inputs.Values, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!jobsToken.IsCancellationRequested)
        {
            throw new TimeoutException($"the model did not answer within {context.Options.ModelTimeout.TotalSeconds:0.#} s");
        }
    }
}
