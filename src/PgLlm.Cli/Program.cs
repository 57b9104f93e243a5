// The pgllm command line tool. Host applications can embed the same commands with their own
// scripts: `return await PgLlmCommandLine.RunAsync(args, PgLlm.Generated.PgLlmScripts.All);`
if (args is ["worker", ..])
{
    // A process that runs only the worker: its socket reads complete inline (fewer thread switches).
    PgLlm.Hosting.DedicatedWorkerProcess.Configure();
}

return await PgLlm.Cli.PgLlmCommandLine.RunAsync(args).ConfigureAwait(false);
