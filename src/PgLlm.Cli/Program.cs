// The pgllm command line tool. Host applications can embed the same commands with their own
// scripts: `return await PgLlmCommandLine.RunAsync(args, PgLlm.Generated.PgLlmScripts.All);`
return await PgLlm.Cli.PgLlmCommandLine.RunAsync(args).ConfigureAwait(false);
