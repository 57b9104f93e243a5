using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Observability;

namespace PgLlm.Worker;

/// <summary>
/// One endpoint's rate limits and 429 pause as every worker of the database shares them (migration 0006): permits
/// are taken in slices from the endpoint's buckets in <c>llm.endpoint_bucket</c> (<c>llm.endpoint_take</c>, one
/// round trip per slice), a 429 is reported with <c>llm.endpoint_pause</c>, and the pause other workers reported
/// reaches <see cref="EndpointGate.PausedUntil"/> through the governor's refresh (at once on its notification).
/// Plugged into the endpoint's <see cref="RateLimitingChatClient"/> by the worker pipeline while the governor acts.
/// </summary>
internal sealed partial class SharedEndpointLimits(NpgsqlDataSource dataSource, EndpointGate gate, TimeProvider time, ILogger logger) : ISharedRateLimits
{
    /// <inheritdoc />
    public DateTimeOffset? PausedUntil => gate.PausedUntil;

    /// <inheritdoc />
    public async ValueTask<SharedRateGrant> TakeAsync(SharedRateKind kind, int wanted, long debt, int perMinute, int burst, CancellationToken cancellationToken)
    {
        var kindName = kind == SharedRateKind.Tokens ? "tokens" : "requests";
        await using var command = dataSource.CreateCommand("SELECT granted, wait_seconds FROM llm.endpoint_take($1, $2, $3, $4, $5, $6)");
        command.Parameters.Add(new NpgsqlParameter { Value = gate.Name });
        command.Parameters.Add(new NpgsqlParameter { Value = kindName });
        command.Parameters.Add(new NpgsqlParameter { Value = wanted });
        command.Parameters.Add(new NpgsqlParameter { Value = perMinute });
        command.Parameters.Add(new NpgsqlParameter { Value = burst });
        command.Parameters.Add(new NpgsqlParameter { Value = debt });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            throw new InvalidOperationException("llm.endpoint_take returned no row.");
        }

        var granted = reader.GetInt32(0);
        PgLlmMetrics.RecordGranted(gate.Name, kindName, granted);
        return new SharedRateGrant(granted, TimeSpan.FromSeconds(reader.GetDouble(1)));
    }

    /// <inheritdoc />
    public void Pause(TimeSpan pause)
    {
        gate.PauseUntil(time.GetUtcNow() + pause);
        _ = ReportPauseAsync(pause);
    }

    private async Task ReportPauseAsync(TimeSpan pause)
    {
        try
        {
            await using var command = dataSource.CreateCommand("SELECT llm.endpoint_pause($1, $2)");
            command.Parameters.Add(new NpgsqlParameter { Value = gate.Name });
            command.Parameters.Add(new NpgsqlParameter { Value = pause.TotalSeconds });
            await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A pause that cannot be shared still holds in this worker; the others meet their own 429.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            LogPauseNotShared(ex, gate.Name);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not share the 429 pause of endpoint {Endpoint} with the other workers")]
    private partial void LogPauseNotShared(Exception exception, string endpoint);
}
