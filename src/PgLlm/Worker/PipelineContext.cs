using Microsoft.Extensions.Logging;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>What every stage of one worker's pipeline shares: the queue, the tasks, the model, the settings.</summary>
internal sealed record PipelineContext(
    NpgsqlDataSource DataSource,
    JobQueue Queue,
    TaskRegistry Registry,
    ModelCaller Model,
    JobSettler Settler,
    PgLlmWorkerOptions Options,
    string WorkerId,
    TimeProvider Time,
    ILogger Logger);
