using System.Globalization;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Observability;

namespace PgLlm.Planning;

/// <summary>
/// How long a re-run takes. At the limits of the endpoint that serves the task (its model names it, as the worker
/// routes it): the configured requests and tokens per minute (<c>PgLlm:RateLimit</c>, or the named endpoint's), else
/// those the workers share in <c>llm.endpoint_bucket</c>; the slower of the two decides. Without limits: at the task's
/// measured call time (<c>llm.job</c>, claim to settle) with the endpoint's calls at once (its concurrency).
/// </summary>
internal static class PlanDuration
{
    /// <summary>The calls at once assumed without settings: the worker's default concurrency.</summary>
    private static readonly int DefaultConcurrency = new PgLlmWorkerOptions().Concurrency;

    public static async Task<RerunEstimate> EstimateAsync(
        NpgsqlDataSource dataSource, PgLlmOptions? options, string? model, TokenHistory history, RerunEstimate estimate, CancellationToken cancellationToken)
    {
        var endpoint = options is null ? null : EndpointRouterChatClient.EndpointOf(model ?? options.Model, options.Endpoints.ContainsKey);
        var limits = endpoint is null ? options?.RateLimit : options!.Endpoints[endpoint].RateLimit;
        var (requests, tokens) = (limits?.RequestsPerMinute, limits?.TokensPerMinute);
        if (requests is null && tokens is null)
        {
            (requests, tokens) = await SharedLimitsAsync(dataSource, endpoint, cancellationToken).ConfigureAwait(false);
        }

        if (requests is not null || tokens is not null)
        {
            var minutes = Math.Max(
                requests is { } rpm ? (double)estimate.Rows / rpm : 0,
                tokens is { } tpm ? (double)(estimate.InputTokens + estimate.OutputTokens) / tpm : 0);
            var basis = string.Join(", ", new[]
            {
                requests is { } r ? r.ToString("N0", CultureInfo.InvariantCulture) + " requests/min" : null,
                tokens is { } t ? t.ToString("N0", CultureInfo.InvariantCulture) + " tokens/min" : null,
            }.Where(s => s is not null));
            return estimate with { Duration = TimeSpan.FromMinutes(minutes), DurationSource = DurationSource.EndpointLimits, DurationBasis = basis };
        }

        if (history.AnyCallSeconds is { } seconds)
        {
            var concurrency = (endpoint is null ? null : options!.Endpoints[endpoint].Concurrency) ?? options?.Worker.Concurrency ?? DefaultConcurrency;
            return estimate with
            {
                Duration = TimeSpan.FromSeconds(seconds * estimate.Rows / Math.Max(1, concurrency)),
                DurationSource = DurationSource.MeasuredLatency,
                DurationBasis = string.Create(CultureInfo.InvariantCulture, $"{seconds:0.###} s a call, {concurrency} at once"),
            };
        }

        return estimate with { DurationSource = DurationSource.Unknown };
    }

    /// <summary>The per-minute limits the workers share for the endpoint (<c>llm.endpoint_bucket</c>), when they set any.</summary>
    private static async Task<(int? Requests, int? Tokens)> SharedLimitsAsync(NpgsqlDataSource dataSource, string? endpoint, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT kind, per_minute FROM llm.endpoint_bucket WHERE endpoint = $1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = endpoint ?? EndpointStatus.DefaultEndpoint });
        int? requests = null, tokens = null;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (reader.GetString(0) == "requests")
            {
                requests = reader.GetInt32(1);
            }
            else
            {
                tokens = reader.GetInt32(1);
            }
        }

        return (requests, tokens);
    }
}
