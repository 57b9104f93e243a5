using System.Collections;
using System.Xml.Linq;

namespace PgLlm.Package.Tests;

/// <summary>The tests that share one pack of the repository's packages.</summary>
[CollectionDefinition(Name)]
public sealed class PackedPackages : ICollectionFixture<PackagesFixture>
{
    /// <summary>The collection's name.</summary>
    public const string Name = "Packed packages";
}

/// <summary>
/// Packs the repository once (<c>bash eng/pack.sh --output</c> into a temporary feed) and gives consumers an isolated
/// NuGet setup: a NuGet.config beside them naming the feed (on top of the machine's usual sources), a temporary
/// global packages folder, and as a read-only fallback the machine's package cache without any PgLlm package, so
/// that a package restored from an earlier pack can never stand in for the one just packed.
/// </summary>
public sealed class PackagesFixture : IAsyncLifetime
{
    private static readonly TimeSpan PackTimeout = TimeSpan.FromMinutes(8);

    /// <summary>The repository's root (the folder of PgLlm.sln).</summary>
    public string RepositoryRoot { get; } = Repository.Root;

    /// <summary>A temporary folder holding everything this run creates; removed at the end.</summary>
    public string Root { get; } = Directory.CreateTempSubdirectory("pgllm-packages-").FullName;

    /// <summary>The local feed the packages were packed into.</summary>
    public string Feed => Path.Combine(Root, "feed");

    /// <summary>The global packages folder of every consumer (NUGET_PACKAGES).</summary>
    public string PackagesFolder => Path.Combine(Root, "nuget-packages");

    /// <summary>The version the packages carry (Directory.Build.props' Version).</summary>
    public string Version { get; } = Repository.BuildProperty("Version");

    /// <summary>The repository URL every package names (Directory.Build.props' RepositoryUrl).</summary>
    public string RepositoryUrl { get; } = Repository.BuildProperty("RepositoryUrl");

    /// <summary>The ids of the packages packed, sorted.</summary>
    public IReadOnlyList<string> PackageIds { get; private set; } = [];

    /// <summary>What eng/pack.sh printed.</summary>
    public ProcessResult? PackResult { get; private set; }

    /// <summary>The environment of every consumer process: this one's, with the isolated NuGet folder, no MSBuild state inherited from the test host and no PGLLM_* settings.</summary>
    public IReadOnlyDictionary<string, string?> ConsumerEnvironment { get; private set; } = new Dictionary<string, string?>();

    /// <summary>The path of one packed package.</summary>
    public string PackagePath(string id) => Path.Combine(Feed, $"{id}.{Version}.nupkg");

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Feed);
        Directory.CreateDirectory(PackagesFolder);
        var baseEnvironment = CleanEnvironment();

        // The pack builds the repository with the machine's usual package cache, like a developer's `bash eng/pack.sh`.
        PackResult = await ProcessRun.RunAsync(
            "bash", [Path.Combine(RepositoryRoot, "eng", "pack.sh"), "--output", Feed], RepositoryRoot, baseEnvironment, PackTimeout);
        if (PackResult.ExitCode != 0)
        {
            await DisposeAsync();
            throw new InvalidOperationException("eng/pack.sh failed: " + PackResult.Describe());
        }

        var suffix = "." + Version + ".nupkg";
        PackageIds = Directory.GetFiles(Feed, "*.nupkg")
            .Select(Path.GetFileName)
            .Select(name => name!.EndsWith(suffix, StringComparison.Ordinal) ? name[..^suffix.Length] : name!)
            .Order(StringComparer.Ordinal)
            .ToList();

        var fallback = MachineCacheWithoutPgLlm();
        File.WriteAllText(Path.Combine(Root, "NuGet.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config>
                <add key="globalPackagesFolder" value="{PackagesFolder}" />
              </config>
              <packageSources>
                <add key="pgllm-packed" value="{Feed}" />
              </packageSources>
              <fallbackPackageFolders>
                <clear />
                {(fallback is null ? string.Empty : $"<add key=\"machine-cache\" value=\"{fallback}\" />")}
              </fallbackPackageFolders>
            </configuration>
            """);

        var consumer = new Dictionary<string, string?>(baseEnvironment)
        {
            ["NUGET_PACKAGES"] = PackagesFolder,
        };
        foreach (var name in Environment.GetEnvironmentVariables().Keys.Cast<string>())
        {
            if (name.StartsWith("PGLLM_", StringComparison.OrdinalIgnoreCase) || name.StartsWith("PgLlm__", StringComparison.OrdinalIgnoreCase))
            {
                consumer[name] = null;
            }
        }

        ConsumerEnvironment = consumer;
    }

    /// <summary>Runs <c>dotnet</c> as a consumer of the feed, in <paramref name="workingDirectory"/> (under <see cref="Root"/>, so that its NuGet.config applies).</summary>
    public Task<ProcessResult> DotnetAsync(string workingDirectory, TimeSpan timeout, params string[] arguments) =>
        ProcessRun.RunAsync("dotnet", arguments, workingDirectory, ConsumerEnvironment, timeout);

    public Task DisposeAsync()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // A process still holding a file: the temporary folder is left to the system.
        }
        catch (UnauthorizedAccessException)
        {
            // Likewise.
        }

        return Task.CompletedTask;
    }

    /// <summary>This process's environment for child builds: MSBuild's variables of the test host removed (they would point a child build at the wrong SDK state), telemetry and banners off.</summary>
    private static Dictionary<string, string?> CleanEnvironment()
    {
        var environment = new Dictionary<string, string?>(StringComparer.Ordinal)
        {
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
            ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
            ["DOTNET_GENERATE_ASPNET_CERTIFICATE"] = "false",
            ["MSBUILDNOINPROCNODE"] = null,
        };
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            var name = (string)entry.Key;
            if (name.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || name.StartsWith("VSTEST_", StringComparison.OrdinalIgnoreCase))
            {
                environment[name] = null;
            }
        }

        return environment;
    }

    /// <summary>
    /// A folder of links to every package in the machine's cache except PgLlm's, used as a read-only fallback so that
    /// consumers restore third-party packages without downloading them again; null when there is no cache.
    /// </summary>
    private string? MachineCacheWithoutPgLlm()
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        if (string.IsNullOrEmpty(cache))
        {
            cache = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        }

        if (!Directory.Exists(cache))
        {
            return null;
        }

        var view = Path.Combine(Root, "machine-cache");
        Directory.CreateDirectory(view);
        foreach (var package in Directory.EnumerateDirectories(cache))
        {
            var name = Path.GetFileName(package);
            if (!name.StartsWith("pgllm", StringComparison.OrdinalIgnoreCase))
            {
                Directory.CreateSymbolicLink(Path.Combine(view, name), package);
            }
        }

        return view;
    }
}

/// <summary>Where the repository is, and what its build files say.</summary>
internal static class Repository
{
    /// <summary>The folder of PgLlm.sln, found above the test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>A property of Directory.Build.props.</summary>
    public static string BuildProperty(string name) =>
        XDocument.Load(Path.Combine(Root, "Directory.Build.props")).Descendants(name).Select(e => e.Value.Trim()).FirstOrDefault(v => v.Length > 0)
        ?? throw new InvalidOperationException($"Directory.Build.props has no <{name}>.");

    /// <summary>The version Directory.Packages.props gives a package.</summary>
    public static string CentralVersion(string package) =>
        XDocument.Load(Path.Combine(Root, "Directory.Packages.props")).Descendants("PackageVersion")
            .Where(e => (string?)e.Attribute("Include") == package).Select(e => (string?)e.Attribute("Version")).FirstOrDefault()
        ?? throw new InvalidOperationException($"Directory.Packages.props has no version of {package}.");

    private static string FindRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "PgLlm.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"PgLlm.sln was not found above {AppContext.BaseDirectory}.");
    }
}
