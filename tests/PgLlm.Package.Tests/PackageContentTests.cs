using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
using Microsoft.CodeAnalysis;

namespace PgLlm.Package.Tests;

/// <summary>What eng/pack.sh produces: which packages, and what each carries.</summary>
[Collection(PackedPackages.Name)]
public sealed class PackageContentTests(PackagesFixture packages)
{
    [Fact]
    public void Packs_the_libraries_the_tool_and_the_template_and_nothing_else()
    {
        var expected = new List<string> { "PgLlm", "PgLlm.Cli", "PgLlm.Local", "PgLlm.Templates" };
        // The command line's library, once the solution has one.
        if (File.Exists(Path.Combine(packages.RepositoryRoot, "src", "PgLlm.CommandLine", "PgLlm.CommandLine.csproj")))
        {
            expected.Add("PgLlm.CommandLine");
        }

        // The operations console, once the solution has it.
        if (File.Exists(Path.Combine(packages.RepositoryRoot, "src", "PgLlm.OperationsConsole", "PgLlm.OperationsConsole.csproj")))
        {
            expected.Add("PgLlm.OperationsConsole");
        }

        Assert.Equal(expected.Order(StringComparer.Ordinal), packages.PackageIds);
        foreach (var id in expected)
        {
            Assert.Contains(id + "." + packages.Version + ".nupkg", packages.PackResult!.Output, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Every_package_names_its_license_readme_project_and_repository()
    {
        foreach (var id in packages.PackageIds)
        {
            using var archive = ZipFile.OpenRead(packages.PackagePath(id));
            var metadata = Nuspec(archive).Root!.Elements().Single(e => e.Name.LocalName == "metadata");
            string? Value(string name) => metadata.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value;

            var license = metadata.Elements().Single(e => e.Name.LocalName == "license");
            Assert.True(license.Attribute("type")?.Value == "expression" && license.Value == "MIT", $"{id}: license is {license}");
            Assert.Equal(packages.RepositoryUrl, Value("projectUrl"));
            Assert.Equal(packages.RepositoryUrl, metadata.Elements().Single(e => e.Name.LocalName == "repository").Attribute("url")?.Value);
            Assert.False(string.IsNullOrWhiteSpace(Value("tags")), $"{id} has no tags");
            var description = Value("description");
            Assert.False(string.IsNullOrWhiteSpace(description) || description == "Package Description", $"{id} has no description of its own");

            var readme = Value("readme");
            Assert.False(string.IsNullOrEmpty(readme), $"{id} names no readme");
            using (var reader = new StreamReader(archive.GetEntry(readme!)!.Open()))
            {
                Assert.StartsWith("# ", reader.ReadToEnd(), StringComparison.Ordinal);
            }

            Assert.NotNull(archive.GetEntry("LICENSE"));
        }
    }

    [Fact]
    public void The_runtime_package_carries_the_generator_as_an_analyzer_and_the_tool_is_pgllm()
    {
        using (var runtime = ZipFile.OpenRead(packages.PackagePath("PgLlm")))
        {
            var entries = runtime.Entries.Select(e => e.FullName).ToList();
            Assert.Contains("analyzers/dotnet/cs/PgLlm.Generators.dll", entries);
            Assert.Contains("lib/net10.0/PgLlm.dll", entries);
            Assert.DoesNotContain(entries, e => e.StartsWith("lib/", StringComparison.Ordinal) && e.EndsWith("PgLlm.Generators.dll", StringComparison.Ordinal));
            // The generator is no runtime dependency of a consumer.
            Assert.DoesNotContain(Nuspec(runtime).Descendants().Where(e => e.Name.LocalName == "dependency"), d => d.Attribute("id")?.Value == "PgLlm.Generators");
        }

        using var tool = ZipFile.OpenRead(packages.PackagePath("PgLlm.Cli"));
        var settings = XDocument.Load(tool.Entries.Single(e => e.FullName.EndsWith("/DotnetToolSettings.xml", StringComparison.Ordinal)).Open());
        Assert.Equal("pgllm", settings.Descendants("Command").Single().Attribute("Name")?.Value);
    }

    [Fact]
    public void The_diagnostics_help_links_point_at_the_repository_the_packages_name()
    {
        // The generator as packed, loaded next to the compiler assemblies this test references (the same Roslyn).
        var folder = Path.Combine(packages.Root, "packed-generator");
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, "PgLlm.Generators.dll");
        using (var runtime = ZipFile.OpenRead(packages.PackagePath("PgLlm")))
        {
            runtime.GetEntry("analyzers/dotnet/cs/PgLlm.Generators.dll")!.ExtractToFile(path, overwrite: true);
        }

        var generator = Assembly.LoadFile(path);
        var descriptors = generator.GetType("PgLlm.Generators.DiagnosticDescriptors", throwOnError: true)!
            .GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
            .Where(f => f.FieldType == typeof(DiagnosticDescriptor))
            .Select(f => (DiagnosticDescriptor)f.GetValue(null)!)
            .ToList();
        Assert.NotEmpty(descriptors);

        var diagnosticsDoc = File.ReadAllLines(Path.Combine(packages.RepositoryRoot, "docs", "diagnostics.md"));
        foreach (var descriptor in descriptors)
        {
            Assert.Equal($"{packages.RepositoryUrl}/blob/main/docs/diagnostics.md#{descriptor.Id.ToLowerInvariant()}", descriptor.HelpLinkUri);
            Assert.Contains("## " + descriptor.Id, diagnosticsDoc);
        }

        Assert.Equal(packages.RepositoryUrl, Repository.BuildProperty("PackageProjectUrl"));
    }

    [Fact]
    public async Task Pack_script_rejects_an_unknown_argument_with_one_line_on_stderr()
    {
        var result = await ProcessRun.RunAsync(
            "bash", [Path.Combine(packages.RepositoryRoot, "eng", "pack.sh"), "--bogus"], packages.Root, packages.ConsumerEnvironment, TimeSpan.FromSeconds(30));

        Assert.Equal(2, result.ExitCode);
        Assert.Equal("pack.sh: unknown argument '--bogus' (see --help)", result.Error.TrimEnd());
        Assert.Empty(result.Output);
    }

    private static XDocument Nuspec(ZipArchive archive) =>
        XDocument.Load(archive.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal) && !e.FullName.Contains('/', StringComparison.Ordinal)).Open());
}
