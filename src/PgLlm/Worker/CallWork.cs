using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>A claimed job ready for its model call: its task and the current values its prompt reads.</summary>
internal sealed record CallWork(ClaimedJob Job, TaskDefinition Task, JobInputs Inputs);
