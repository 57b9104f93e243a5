namespace PgLlm.Failures;

/// <summary>What a failed call says about its endpoint (not about the job), which the endpoint governor acts on.</summary>
internal enum EndpointFault
{
    /// <summary>Nothing about the endpoint: the job's own failure (a bad answer, a bad request, a throttle the rate limiter handles).</summary>
    None,

    /// <summary>HTTP 401 or 403: the key is wrong or lacks access. The endpoint stops until resumed or reconfigured.</summary>
    Unauthorized,

    /// <summary>HTTP 429 whose body speaks of quota or billing (<c>insufficient_quota</c>): the endpoint stops until resumed or reconfigured.</summary>
    Quota,

    /// <summary>The endpoint cannot be reached, timed out, or answered 408, 502, 503, 504 or 529: counts toward opening its circuit breaker.</summary>
    Outage,
}
