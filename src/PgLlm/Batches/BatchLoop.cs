using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Batches;

/// <summary>
/// The batch tier, a stage beside the claim loops: each round it moves on the open batches it holds (or whose worker's
/// lease ran out), then starts a batch per endpoint and model whose waiting jobs fill one or have waited long enough.
/// A batch goes through <c>preparing</c> (its jobs taken and its lines written to a file), <c>uploading</c>,
/// <c>uploaded</c> (the input file's id known), <c>submitted</c> (the provider's batch known: polled), then its
/// results are settled and it ends <c>done</c>, <c>expired</c>, <c>cancelled</c> or <c>failed</c>. Each step is
/// recorded before the next call: a worker that dies after an upload or a create finds the file or the batch again
/// by the batch's token (in the file's name, in the batch's metadata) instead of making another.
/// </summary>
internal sealed partial class BatchLoop
{
    private static readonly HashSet<string> Finished = new(StringComparer.Ordinal) { "completed", "expired", "cancelled", "failed" };

    private readonly PipelineContext _context;
    private readonly PgLlmOptions _options;
    private readonly PgLlmBatchOptions _batch;
    private readonly bool _untilIdle;
    private readonly Func<string?, bool> _endpointAllows;
    private readonly BatchStore _store;
    private readonly BatchRequestFile _requests;
    private readonly BatchResults _results;
    private readonly SecretRedactor _redactor;
    private readonly Dictionary<string, BatchApiClient> _clients = new(StringComparer.Ordinal);
    private readonly ILogger _logger;

    public BatchLoop(PipelineContext context, PgLlmOptions options, bool untilIdle, Func<string?, bool> endpointAllows, JobQueue batchQueue, JobSettler batchSettler)
    {
        _context = context;
        _options = options;
        _batch = options.Batch;
        _untilIdle = untilIdle;
        _endpointAllows = endpointAllows;
        _redactor = WorkerPipeline.SecretRedactorOf(options);
        _store = new BatchStore(context.DataSource, context.WorkerId);
        _requests = new BatchRequestFile(context, _store, _batch.MaxBytes);
        _results = new BatchResults(context, batchQueue, batchSettler, _store);
        _logger = context.Logger;
    }

    /// <summary>How long this worker holds a batch it moves on: others take it over after that (at least a few polls).</summary>
    private TimeSpan BatchLease => TimeSpan.FromTicks(Math.Max(_batch.Lease.Ticks, 4 * _batch.PollInterval.Ticks));

    /// <summary>Where a batch's input file is written before its upload.</summary>
    internal static string FilePathOf(BatchRow batch) => Path.Combine(Path.GetTempPath(), "pgllm-batches", batch.FileName);

    /// <summary>Runs rounds until stopped; draining until idle, until the batch tier has nothing left.</summary>
    public async Task RunAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                try
                {
                    var served = await RoundAsync(stoppingToken).ConfigureAwait(false);
                    if (_untilIdle && (!served || !await _store.AnyWorkAsync(stoppingToken).ConfigureAwait(false)))
                    {
                        // Draining until idle: done, or what waits cannot be sent (no endpoint URL, or stopped).
                        return;
                    }
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested && (ex is NpgsqlException || DatabaseFault.IsConnectionFault(ex)))
                {
                    LogDatabaseError(ex);
                }

                await Task.Delay(_batch.PollInterval, _context.Time, stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopped: every step so far is recorded; the next worker (or this one, restarted) goes on from there.
        }
        finally
        {
            foreach (var client in _clients.Values)
            {
                client.Dispose();
            }

            // Stopping: the batches this worker held are free for the next worker at once (a dead worker's, after the lease).
            await _store.LetGoAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One round; false when nothing could be moved on: no open batch, and no endpoint to send waiting jobs to.</summary>
    private async Task<bool> RoundAsync(CancellationToken cancellationToken)
    {
        var open = await _store.LeaseAsync(BatchLease, cancellationToken).ConfigureAwait(false);
        foreach (var batch in open)
        {
            await AdvanceQuietlyAsync(batch, cancellationToken).ConfigureAwait(false);
        }

        if (!_batch.Enabled)
        {
            return open.Count > 0;
        }

        var served = open.Count > 0;

        var tasks = await _context.Registry.AllAsync(cancellationToken).ConfigureAwait(false);
        foreach (var group in tasks.Values.GroupBy(t => BatchEndpoint.Resolve(_options, t.Model)))
        {
            var endpoint = group.Key;
            if (endpoint.BaseUrl is null || !_endpointAllows(endpoint.Name))
            {
                continue;
            }

            served = true;

            var names = group.Select(t => t.Name).Order(StringComparer.Ordinal).ToArray();
            while (await _store.TakeAsync(endpoint.Name, endpoint.Model, names, _batch, BatchLease, _untilIdle, cancellationToken).ConfigureAwait(false) is { } id)
            {
                // Taken with this worker's lease: moved on at once.
                await AdvanceQuietlyAsync(await _store.ReadAsync(id, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
            }
        }

        return served;
    }

    /// <summary>Moves a batch on as far as it goes now; an endpoint's failure is logged and the step tried again next round.</summary>
    private async Task AdvanceQuietlyAsync(BatchRow batch, CancellationToken cancellationToken)
    {
        try
        {
            await AdvanceAsync(batch, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is ModelEndpointException or HttpRequestException or IOException or TaskCanceledException)
        {
            LogStepFailed(batch.Id, batch.State, _redactor.Redact(ex.Message));
            await _store.StepAsync(batch.Id, batch.State, error: _redactor.Redact(ex.Message), cancellationToken: cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task AdvanceAsync(BatchRow batch, CancellationToken cancellationToken)
    {
        var endpoint = BatchEndpoint.Of(_options, batch.Endpoint.Length == 0 ? null : batch.Endpoint, batch.Model);
        if (endpoint.BaseUrl is null)
        {
            return;
        }

        var api = ClientOf(endpoint);
        if (batch.CancelRequestedAt is not null && batch.ProviderBatchId is null)
        {
            // Not submitted: nothing to cancel at the provider; the jobs go back to pending, unspent.
            await _store.FinishAsync(batch.Id, "cancelled", _batch.MaxTries, 0, 0, "cancelled before it was submitted", cancellationToken).ConfigureAwait(false);
            return;
        }

        var state = batch.State;
        var fileId = batch.InputFileId;
        if (state == "preparing")
        {
            var (lines, bytes) = await _requests.WriteAsync(batch, FilePathOf(batch), cancellationToken).ConfigureAwait(false);
            if (lines == 0)
            {
                File.Delete(FilePathOf(batch));
                await _store.FinishAsync(batch.Id, "completed", _batch.MaxTries, 0, 0, null, cancellationToken).ConfigureAwait(false);
                return;
            }

            await _store.StepAsync(batch.Id, state = "uploading", bytes: bytes, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        if (state == "uploading")
        {
            fileId = await UploadAsync(api, batch, cancellationToken).ConfigureAwait(false);
            await _store.StepAsync(batch.Id, state = "uploaded", inputFileId: fileId, cancellationToken: cancellationToken).ConfigureAwait(false);
            File.Delete(FilePathOf(batch));
        }

        var provider = state == "uploaded"
            ? await SubmitAsync(api, batch, fileId!, cancellationToken).ConfigureAwait(false)
            : await PollAsync(api, batch, cancellationToken).ConfigureAwait(false);
        if (Finished.Contains(provider.Status))
        {
            await SettleAsync(api, batch, provider, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The input file's id: the one a worker uploaded before it died, found by name, else a new upload.</summary>
    private async Task<string> UploadAsync(BatchApiClient api, BatchRow batch, CancellationToken cancellationToken)
    {
        if (await api.FindFileAsync(batch.FileName, cancellationToken).ConfigureAwait(false) is { } uploaded)
        {
            return uploaded;
        }

        var path = FilePathOf(batch);
        if (!File.Exists(path))
        {
            // Written by a worker that died before it uploaded: written again from the jobs the batch holds.
            await _requests.WriteAsync(batch, path, cancellationToken).ConfigureAwait(false);
        }

        return await api.UploadAsync(path, batch.FileName, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The provider's batch: the one a worker created before it died, found by token, else a new one.</summary>
    private async Task<ProviderBatch> SubmitAsync(BatchApiClient api, BatchRow batch, string fileId, CancellationToken cancellationToken)
    {
        var provider = await api.FindBatchAsync(batch.Token, cancellationToken).ConfigureAwait(false)
            ?? await api.CreateAsync(fileId, batch.Token, _batch.CompletionWindow, cancellationToken).ConfigureAwait(false);
        await _store.StepAsync(batch.Id, "submitted", providerBatchId: provider.Id, providerStatus: provider.Status, expectedBy: provider.ExpiresAt, cancellationToken: cancellationToken).ConfigureAwait(false);
        LogSubmitted(batch.Id, provider.Id, batch.Endpoint, batch.Model);
        return provider;
    }

    private async Task<ProviderBatch> PollAsync(BatchApiClient api, BatchRow batch, CancellationToken cancellationToken)
    {
        var provider = await api.GetAsync(batch.ProviderBatchId!, cancellationToken).ConfigureAwait(false);
        if (batch.CancelRequestedAt is not null && !Finished.Contains(provider.Status) && provider.Status != "cancelling")
        {
            provider = await api.CancelAsync(provider.Id, cancellationToken).ConfigureAwait(false);
        }

        if (batch.State != "settling")
        {
            await _store.StepAsync(batch.Id, Finished.Contains(provider.Status) ? "settling" : "submitted", providerStatus: provider.Status, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        return provider;
    }

    /// <summary>Writes the results, then ends the batch: the jobs it still holds are given back (or, completed, failed as missing).</summary>
    private async Task SettleAsync(BatchApiClient api, BatchRow batch, ProviderBatch provider, CancellationToken cancellationToken)
    {
        var tally = await _results.SettleAsync(api, batch.Id, provider.OutputFileId, provider.ErrorFileId, cancellationToken).ConfigureAwait(false);
        var missing = await _store.FinishAsync(batch.Id, provider.Status, _batch.MaxTries, tally.Succeeded, tally.Failed, provider.Errors, cancellationToken).ConfigureAwait(false);
        LogSettled(batch.Id, provider.Status, tally.Succeeded, tally.Failed, missing);
    }

    private BatchApiClient ClientOf(BatchEndpoint endpoint)
    {
        var key = endpoint.Name ?? string.Empty;
        if (!_clients.TryGetValue(key, out var client))
        {
            _clients[key] = client = new BatchApiClient(endpoint.BaseUrl!, endpoint.ApiKey, TimeSpan.FromMinutes(10));
        }

        return client;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Batch {Batch} submitted as {ProviderBatch} (endpoint '{Endpoint}', model {Model})")]
    private partial void LogSubmitted(long batch, string providerBatch, string endpoint, string model);

    [LoggerMessage(Level = LogLevel.Information, Message = "Batch {Batch} {Status}: {Succeeded} answers, {Failed} failed lines, {Missing} jobs without a line")]
    private partial void LogSettled(long batch, string status, int succeeded, int failed, int missing);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Batch {Batch} could not go on from {State}; tried again next round: {Error}")]
    private partial void LogStepFailed(long batch, string state, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The batch tier could not reach the database; trying again next round")]
    private partial void LogDatabaseError(Exception exception);
}
