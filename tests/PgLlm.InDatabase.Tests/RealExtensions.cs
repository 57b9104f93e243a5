using System.Diagnostics;

namespace PgLlm.InDatabase.Tests;

/// <summary>
/// Whether the real pgsql-http extension is installed in the server the tests use ($(pg_config --pkglibdir)/http.so;
/// tests/run.sh builds it from the vendored source tarball when it can).
/// </summary>
internal static class RealExtensions
{
    private static readonly Lazy<string?> MissingReason = new(FindMissingReason);

    /// <summary>Null when the http extension is installed; otherwise why the tests that need it are skipped.</summary>
    public static string? HttpMissing => MissingReason.Value;

    private static string? FindMissingReason()
    {
        var pgConfig = FindPgConfig();
        if (pgConfig is null)
        {
            return "pg_config was not found, so the real http extension cannot be located";
        }

        using var process = Process.Start(new ProcessStartInfo(pgConfig, "--pkglibdir") { RedirectStandardOutput = true, UseShellExecute = false })!;
        var libDirectory = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        return File.Exists(Path.Combine(libDirectory, "http.so"))
            ? null
            : $"the real http extension (pgsql-http) is not installed ({Path.Combine(libDirectory, "http.so")} is missing); tests/run.sh builds it from the vendored tarball";
    }

    private static string? FindPgConfig()
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("PGLLM_PG_BIN") is { Length: > 0 } bin)
        {
            candidates.Add(Path.Combine(bin, "pg_config"));
        }

        candidates.AddRange((Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, "pg_config")));
        if (Directory.Exists("/usr/lib/postgresql"))
        {
            candidates.AddRange(Directory.GetDirectories("/usr/lib/postgresql").OrderDescending().Select(d => Path.Combine(d, "bin", "pg_config")));
        }

        return candidates.FirstOrDefault(File.Exists);
    }
}

/// <summary>A test that runs through the real http extension: skipped, with the reason, when it is not installed.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class RealHttpFactAttribute : FactAttribute
{
    public RealHttpFactAttribute()
    {
        if (RealExtensions.HttpMissing is { } reason)
        {
            Skip = reason;
        }
    }
}
