using System.Reflection;
using System.Runtime.Loader;
using PgLlm.Migrations;

namespace PgLlm.Cli;

/// <summary>Finds the generated scripts (<c>PgLlm.Generated.PgLlmScripts.All</c>) in a compiled application.</summary>
internal static class ScriptAssembly
{
    private const string GeneratedType = "PgLlm.Generated.PgLlmScripts";

    public static IReadOnlyList<PgLlmScript> Load(string path)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full))
        {
            throw new CommandLineException($"assembly not found: {full}");
        }

        Assembly assembly;
        var directory = Path.GetDirectoryName(full)!;
        // The application's own dependencies load from its folder; PgLlm itself is the tool's copy,
        // so that the script type is the one this tool knows.
        AssemblyLoadContext.Default.Resolving += (context, name) =>
        {
            var candidate = Path.Combine(directory, name.Name + ".dll");
            return File.Exists(candidate) ? context.LoadFromAssemblyPath(candidate) : null;
        };
        try
        {
            assembly = AssemblyLoadContext.Default.LoadFromAssemblyPath(full);
        }
        catch (BadImageFormatException ex)
        {
            throw new CommandLineException($"{full} is not a .NET assembly: {ex.Message}", ex);
        }

        var type = assembly.GetType(GeneratedType)
            ?? throw new CommandLineException(
                $"{Path.GetFileName(full)} has no generated PgLlm scripts ({GeneratedType}): pass the assembly that declares the [LlmTable] types and references PgLlm.");
        var property = type.GetProperty("All", BindingFlags.Public | BindingFlags.Static);
        if (property?.GetValue(null) is not IEnumerable<PgLlmScript> scripts)
        {
            throw new CommandLineException($"{Path.GetFileName(full)} was built with another version of PgLlm than this tool: its scripts cannot be read.");
        }

        return scripts.ToList();
    }
}
