using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Observability;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// Listens on <see cref="PgLlmWorker.JobsChannel"/> (jobs enqueued while a lane sleeps) and
/// <see cref="PgLlmWorker.TasksChannel"/> (the task registry changed: reloaded before the next claim), and wakes
/// every lane's claim loop; and on <see cref="EndpointGovernor.EndpointsChannel"/> (an endpoint stopped, opened or
/// closed), has the endpoint governor read the shared state at once; and on <see cref="BudgetStatus.Channel"/> (a daily
/// budget set, raised or cleared), has the budgets read at once. On a lost connection it backs off and listens again, waking the lanes once it
/// does (jobs may have arrived meanwhile); the claim loops poll in the meantime.
/// </summary>
internal sealed partial class NotificationListener(NpgsqlDataSource dataSource, TaskRegistry registry, Action wake, TimeProvider time, ILogger logger, Action? endpointsChanged = null, Action? budgetsChanged = null)
{
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var backoff = new Backoff(time);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await ListenAsync(backoff, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                LogListenFailed(ex, backoff.Next);
                try
                {
                    await backoff.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task ListenAsync(Backoff backoff, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        connection.Notification += (_, e) =>
        {
            if (e.Channel == EndpointGovernor.EndpointsChannel)
            {
                endpointsChanged?.Invoke();
                return;
            }

            if (e.Channel == BudgetStatus.Channel)
            {
                // Read at once; the refresh wakes the lanes whose budget has room again.
                budgetsChanged?.Invoke();
                return;
            }

            if (e.Channel == PgLlmWorker.TasksChannel)
            {
                registry.Invalidate();
            }

            wake();
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {PgLlmWorker.JobsChannel}; LISTEN {PgLlmWorker.TasksChannel}; LISTEN {EndpointGovernor.EndpointsChannel}; LISTEN {BudgetStatus.Channel}", connection))
        {
            await listen.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        // Jobs may have arrived while nobody was listening.
        wake();
        backoff.Reset();
        while (true)
        {
            await connection.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Lost the notification connection; listening again in {Delay}")]
    private partial void LogListenFailed(Exception exception, TimeSpan delay);
}
