// The pgllm dotnet tool: the commands of PgLlm.CommandLine, with the scripts of --assembly. An application
// runs the same commands with its own scripts by referencing the PgLlm.CommandLine package:
// `return await PgLlm.Cli.PgLlmCommandLine.RunAsync(args, PgLlm.Generated.PgLlmScripts.All);`
if (args is ["worker", ..])
{
    // A process that runs only the worker: its socket reads complete inline (fewer thread switches).
    PgLlm.Hosting.DedicatedWorkerProcess.Configure();
}

return await PgLlm.Cli.PgLlmCommandLine.RunAsync(args).ConfigureAwait(false);
