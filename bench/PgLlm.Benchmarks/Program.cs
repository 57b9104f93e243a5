// PgLlm's benchmark suite. Starts its own throwaway PostgreSQL and a local chat-completions
// endpoint with a configurable answer latency, measures every key of docs/benchmarks.md, prints a
// table and writes bench/results/latest.json.
//
//   dotnet run -c Release --project bench/PgLlm.Benchmarks               full run (several minutes)
//   dotnet run -c Release --project bench/PgLlm.Benchmarks -- --quick    every measurement, smaller, under a minute
//   ... -- --out path.json       write the results elsewhere
//   ... -- --only drain_0ms      run one measurement group (insert, trigger, drain_0ms, drain_200ms, drain_2s_1000, scaling, pickup, rerun_pickup, update, rss, backfill, console), or several: --only insert,trigger
//   ... -- --stats               print the top statements from pg_stat_statements at the end
//
// The worker always runs as a separate process (this program, started with "worker"), so its
// memory and CPU are its own, as in production; so do the user-update clients ("clients").
using PgLlm.Benchmarks;
using PgLlm.Hosting;

if (args is ["worker", ..])
{
    // As `pgllm worker` does: a process that runs only the worker.
    DedicatedWorkerProcess.Configure();
    return await WorkerChild.RunAsChildAsync(args[1..]);
}

if (args is ["clients", ..])
{
    return await UserClients.RunAsChildAsync(args[1..]);
}

// The suite's own process hosts the stand-in model endpoint, which in production is on another
// machine: its socket reads complete inline, as Kestrel's handling does (Suite starts it with
// InlineScheduling), so that it takes as few thread switches from the shared cores as it can.
// The same setting as a worker's process (and the same rule: a value already in the environment is
// kept, so DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0 measures without, in every process).
DedicatedWorkerProcess.Configure();

SuiteSettings settings;
try
{
    settings = SuiteSettings.Parse(args);
}
catch (ArgumentException ex)
{
    await Console.Error.WriteLineAsync("pgllm benchmarks: " + ex.Message);
    return 2;
}

try
{
    return await Suite.RunAsync(settings);
}
catch (Exception) when (Suite.Interrupted is { } interrupted)
{
    // Ctrl+C or SIGTERM: the measurement in progress failed because its PostgreSQL was stopped.
    return await interrupted;
}
