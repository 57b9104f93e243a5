using System.Collections;
using System.Reflection;
using System.Runtime.Loader;

// Usage: PgLlm.SqlFolder <assembly> <PgLlm.dll> <folder> <display folder> <write|check> <stamp file>
// Prints one line per file it wrote or deleted, and "PGLLM1xx|file|message" for each problem, which the
// targets report as a warning or an error (PgLlmSqlDrift). The stamp is written when the folder is left clean.
if (args.Length != 6 || args[4] is not ("write" or "check"))
{
    Console.WriteLine("PGLLM101|PgLlm.SqlFolder|expected <assembly> <PgLlm.dll> <folder> <display folder> <write|check> <stamp file>.");
    return 0;
}

var (assemblyPath, runtimePath, folder, display, write, stamp) = (args[0], args[1], args[2], args[3], args[4] == "write", args[5]);
File.Delete(stamp);
IReadOnlyList<string> lines;
try
{
    lines = Run(assemblyPath, runtimePath, folder, write);
}
catch (Exception e) // Whatever went wrong becomes one PGLLM101 line for the build, never a stack trace.
{
    var inner = e is TargetInvocationException { InnerException: { } i } ? i : e;
    Console.WriteLine($"PGLLM101|{assemblyPath}|could not {(write ? "write" : "check")} the generated SQL in {display}: {OneLine(inner.Message)}");
    return 0;
}

foreach (var line in lines)
{
    var colon = line.IndexOf(':', StringComparison.Ordinal);
    var name = line[..colon];
    var problem = line[(colon + 1)..].Trim();
    if (write)
    {
        Console.WriteLine($"PgLlm: {display}/{name} {problem}");
        continue;
    }

    problem = problem switch
    {
        "missing" => "is missing",
        "no generated script has this name" => "is a generated script that no table produces any more",
        var other => other,
    };
    Console.WriteLine($"PGLLM100|{Path.Combine(folder, name)}|{display}/{name} {problem}: the committed SQL is not what the PgLlm generator emits. Update the folder with `dotnet build -p:PgLlmSqlWrite=true` and commit it.");
}

if (write || lines.Count == 0)
{
    File.WriteAllText(stamp, string.Empty);
}

return 0;

static string OneLine(string text) => text.ReplaceLineEndings(" ").Replace('|', '/').Replace(';', ',');

static IReadOnlyList<string> Run(string assemblyPath, string runtimePath, string folder, bool write)
{
    var context = new ScriptsLoadContext(Path.GetFullPath(runtimePath), Path.GetDirectoryName(Path.GetFullPath(assemblyPath))!);
    try
    {
        var runtime = context.Runtime;
        var app = context.LoadFromAssemblyPath(Path.GetFullPath(assemblyPath));
        var all = app.GetType("PgLlm.Generated.PgLlmScripts")?.GetProperty("All", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as IEnumerable
            ?? throw new InvalidOperationException($"{app.GetName().Name} has no PgLlm.Generated.PgLlmScripts.All: is the PgLlm generator (the package's analyzer) referenced?");
        var scriptType = runtime.GetType("PgLlm.Migrations.PgLlmScript", throwOnError: true)!;
        var method = runtime.GetType("PgLlm.Migrations.PgLlmScriptFolder", throwOnError: true)!
            .GetMethod(write ? "Write" : "Compare", [typeof(string), typeof(IEnumerable<>).MakeGenericType(scriptType)])
            ?? throw new InvalidOperationException($"{runtimePath} has no PgLlmScriptFolder.{(write ? "Write" : "Compare")}: the PgLlm package is older than its build targets.");
        return method.Invoke(null, [folder, all]) as IReadOnlyList<string> ?? [];
    }
    finally
    {
        context.Unload();
    }
}

/// <summary>Loads the application's assembly beside the PgLlm.dll it was compiled against, apart from this tool.</summary>
internal sealed class ScriptsLoadContext(string runtimePath, string appDirectory) : AssemblyLoadContext("PgLlm.SqlFolder", isCollectible: true)
{
    private Assembly? _runtime;

    public Assembly Runtime => _runtime ??= LoadFromAssemblyPath(runtimePath);

    protected override Assembly? Load(AssemblyName assemblyName)
    {
        if (assemblyName.Name == "PgLlm")
        {
            return Runtime;
        }

        // Framework assemblies come from the default context; anything else the scripts need sits beside the app.
        var candidate = Path.Combine(appDirectory, assemblyName.Name + ".dll");
        return File.Exists(candidate) ? LoadFromAssemblyPath(candidate) : null;
    }
}
