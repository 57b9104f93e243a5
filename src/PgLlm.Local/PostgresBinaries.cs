using System.Globalization;

namespace PgLlm.Local;

/// <summary>Locates the PostgreSQL server binaries.</summary>
internal sealed record PostgresBinaries(string Directory)
{
    public const string EnvironmentVariable = "PGLLM_PG_BIN";

    private static readonly string ExeSuffix = OperatingSystem.IsWindows() ? ".exe" : string.Empty;

    public string InitDb => Path.Combine(Directory, "initdb" + ExeSuffix);

    public string PgCtl => Path.Combine(Directory, "pg_ctl" + ExeSuffix);

    public string Postgres => Path.Combine(Directory, "postgres" + ExeSuffix);

    /// <summary>Finds the binaries: explicit directory, then PGLLM_PG_BIN, then PATH, then /usr/lib/postgresql/*/bin.</summary>
    public static PostgresBinaries? TryFind(string? explicitDirectory, out string reason)
    {
        if (!string.IsNullOrWhiteSpace(explicitDirectory))
        {
            return FromDirectory(explicitDirectory, "LocalPostgresOptions.BinDirectory", out reason);
        }

        var fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return FromDirectory(fromEnvironment, EnvironmentVariable, out reason);
        }

        var onPath = ProcessRunner.FindOnPath("initdb" + ExeSuffix);
        if (onPath is not null)
        {
            // Follow symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb): pg_ctl looks for
            // the postgres binary next to its own resolved location.
            var resolved = ResolveLinks(onPath);
            var directory = Path.GetDirectoryName(resolved);
            if (directory is not null && HasAll(directory))
            {
                reason = $"found on PATH: {directory}";
                return new PostgresBinaries(directory);
            }
        }

        const string debianRoot = "/usr/lib/postgresql";
        if (System.IO.Directory.Exists(debianRoot))
        {
            var best = System.IO.Directory.EnumerateDirectories(debianRoot)
                .Select(versionDirectory => (Version: ParseVersion(Path.GetFileName(versionDirectory)), Bin: Path.Combine(versionDirectory, "bin")))
                .Where(candidate => candidate.Version is not null && HasAll(candidate.Bin))
                .OrderByDescending(candidate => candidate.Version)
                .FirstOrDefault();
            if (best.Bin is not null)
            {
                reason = $"found under {debianRoot}: {best.Bin}";
                return new PostgresBinaries(best.Bin);
            }
        }

        reason = $"PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: set {EnvironmentVariable} or "
            + "LocalPostgresOptions.BinDirectory, put initdb on PATH, or install them under /usr/lib/postgresql/<version>/bin.";
        return null;
    }

    private static PostgresBinaries? FromDirectory(string directory, string source, out string reason)
    {
        var full = Path.GetFullPath(directory);
        if (!HasAll(full))
        {
            reason = $"{source} points to '{full}', which does not contain initdb, pg_ctl and postgres.";
            return null;
        }

        reason = $"from {source}: {full}";
        return new PostgresBinaries(full);
    }

    private static bool HasAll(string directory)
        => File.Exists(Path.Combine(directory, "initdb" + ExeSuffix))
            && File.Exists(Path.Combine(directory, "pg_ctl" + ExeSuffix))
            && File.Exists(Path.Combine(directory, "postgres" + ExeSuffix));

    private static string ResolveLinks(string path)
    {
        try
        {
            return File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName ?? path;
        }
        catch (IOException)
        {
            return path;
        }
    }

    private static Version? ParseVersion(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return null;
        }

        if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var major))
        {
            return new Version(major, 0);
        }

        return Version.TryParse(name, out var version) ? version : null;
    }
}
