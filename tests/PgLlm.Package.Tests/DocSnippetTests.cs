using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace PgLlm.Package.Tests;

/// <summary>
/// Every C# block a user would copy from README.md and docs/*.md compiles against the packed PgLlm package, with its
/// generator running. The declaration blocks of one file (types) are compiled with each of its blocks that have
/// top-level statements, one console app per such block (each block its own file); no implicit usings; ASP.NET Core
/// is referenced; a block right after the line
/// <c>&lt;!-- snippet: ignore --&gt;</c> is a fragment and is skipped.
/// </summary>
[Collection(PackedPackages.Name)]
public sealed partial class DocSnippetTests(PackagesFixture packages)
{
    public static TheoryData<string> Documents()
    {
        var data = new TheoryData<string>();
        foreach (var document in MarkdownSnippets.DocumentFiles(Repository.Root))
        {
            if (MarkdownSnippets.Read(File.ReadAllText(Path.Combine(Repository.Root, document))).Any(b => !b.Ignored))
            {
                data.Add(document);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public async Task The_csharp_blocks_compile_against_the_packed_package(string document)
    {
        var failure = await CompileAsync(document, File.ReadAllText(Path.Combine(packages.RepositoryRoot, document)));

        Assert.True(failure is null, failure);
    }

    [Fact]
    public async Task A_block_that_does_not_compile_is_reported_with_its_file_line_and_error()
    {
        var failure = await CompileAsync("docs/broken.md", """
            # Broken

            ```csharp
            using PgLlm;

            [LlmTable("notes")]
            public sealed record Note
            {
                public long Id { get; init; }
                public required string Text { get; init; }

                [LlmColumn("Summarize: {Text}")]
                public string? Summary { get; init; }
            }
            ```

            ```csharp
            System.Console.WriteLine(PgLlm.Generated.PgLlmScripts.All.Count);
            System.Console.WriteLine(undefinedName);
            ```
            """);

        Assert.NotNull(failure);
        Assert.Contains("docs/broken.md:19 (block at line 17): CS0103: The name 'undefinedName' does not exist in the current context", failure, StringComparison.Ordinal);
        // The first block compiled, the generator ran (PgLlmScripts exists): one error only.
        Assert.Single(failure.Split('\n'), l => l.Contains("error", StringComparison.OrdinalIgnoreCase) || l.Contains(": CS", StringComparison.Ordinal));
    }

    /// <summary>
    /// Builds the compiled blocks of one Markdown text against the packed packages: the declaration blocks (types) with
    /// each block that has top-level statements, one app per such block (a library when there is none); null when all
    /// build, else every failure.
    /// </summary>
    private async Task<string?> CompileAsync(string document, string markdown)
    {
        var blocks = MarkdownSnippets.Read(markdown).Where(b => !b.Ignored).ToList();
        var declarations = blocks.Where(b => !HasTopLevelStatements(b)).ToList();
        var programs = blocks.Where(HasTopLevelStatements).Select(p => (CodeBlock?)p).DefaultIfEmpty(null).ToList();
        var failures = new List<string>();
        foreach (var program in programs)
        {
            var name = document.Replace('/', '_').Replace(".md", string.Empty, StringComparison.Ordinal) + (program is null ? string.Empty : $"_L{program.Line}");
            var project = Path.Combine(packages.Root, "snippets", name);
            Directory.CreateDirectory(project);
            File.WriteAllText(Path.Combine(project, "Snippets.csproj"), ProjectFile(program is null ? "Library" : "Exe"));
            foreach (var block in program is null ? declarations : [.. declarations, program])
            {
                File.WriteAllText(Path.Combine(project, BlockFileName(block.Line)), block.Code);
            }

            var build = await packages.DotnetAsync(project, TimeSpan.FromMinutes(4), "build", "-c", "Release", "-nologo", "-clp:NoSummary");
            if (build.ExitCode != 0)
            {
                failures.AddRange(Errors(document, build));
            }
        }

        return failures.Count == 0
            ? null
            : $"{document}: its C# blocks do not compile against the packed PgLlm {packages.Version} " +
              $"(mark a fragment with {MarkdownSnippets.IgnoreMarker} on the line before its fence):{Environment.NewLine}" +
              string.Join(Environment.NewLine, failures.Distinct());
    }

    [Fact]
    public void Markdown_blocks_are_read_with_their_lines_and_ignore_markers()
    {
        var blocks = MarkdownSnippets.Read("""
            # Title

            ```csharp
            var a = 1;
            ```

            <!-- snippet: ignore -->
            ```csharp
            fragment(
            ```

            - a list item:

              ```csharp
              public sealed record R(int X);
              ```

            ```bash
            dotnet run
            ```
            """);

        Assert.Equal([3, 8, 14], blocks.Select(b => b.Line));
        Assert.Equal([false, true, false], blocks.Select(b => b.Ignored));
        Assert.Equal("public sealed record R(int X);", blocks[2].Code);
        Assert.True(HasTopLevelStatements(blocks[0]));
        Assert.False(HasTopLevelStatements(blocks[2]));
    }

    private static bool HasTopLevelStatements(CodeBlock block) =>
        CSharpSyntaxTree.ParseText(block.Code).GetCompilationUnitRoot().Members.OfType<GlobalStatementSyntax>().Any();

    private static string BlockFileName(int line) => $"Block_L{line}.cs";

    private string ProjectFile(string outputType)
    {
        var commandLine = packages.PackageIds.Contains("PgLlm.CommandLine")
            ? $"""<PackageReference Include="PgLlm.CommandLine" Version="{packages.Version}" />"""
            : string.Empty;
        var operationsConsole = packages.PackageIds.Contains("PgLlm.OperationsConsole")
            ? $"""<PackageReference Include="PgLlm.OperationsConsole" Version="{packages.Version}" />"""
            : string.Empty;
        return $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>{outputType}</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>disable</ImplicitUsings>
                <RootNamespace>Snippets</RootNamespace>
              </PropertyGroup>
              <ItemGroup>
                <FrameworkReference Include="Microsoft.AspNetCore.App" />
                <PackageReference Include="PgLlm" Version="{packages.Version}" />
                <PackageReference Include="PgLlm.Local" Version="{packages.Version}" />
                {commandLine}
                {operationsConsole}
                <PackageReference Include="Microsoft.Extensions.Hosting" Version="{Repository.CentralVersion("Microsoft.Extensions.Hosting")}" />
              </ItemGroup>
            </Project>
            """;
    }

    /// <summary>The build's errors, each located in the Markdown file (the block's fence line plus the line in the block).</summary>
    private static List<string> Errors(string document, ProcessResult build)
    {
        var errors = new List<string>();
        foreach (var line in (build.Output + "\n" + build.Error).Split('\n'))
        {
            var inBlock = BlockError().Match(line);
            var located = inBlock.Success
                ? $"{document}:{int.Parse(inBlock.Groups["fence"].Value, CultureInfo.InvariantCulture) + int.Parse(inBlock.Groups["line"].Value, CultureInfo.InvariantCulture)} " +
                  $"(block at line {inBlock.Groups["fence"].Value}): {inBlock.Groups["message"].Value.Trim()}"
                : OtherError().IsMatch(line) ? line.Trim() : null;
            if (located is not null && !errors.Contains(located))
            {
                errors.Add(located);
            }
        }

        return errors.Count > 0 ? errors : [build.Describe()];
    }

    [GeneratedRegex(@"(?:^|[/\\\s])Block_L(?<fence>\d+)\.cs\((?<line>\d+),\d+\): (?:fatal )?error (?<message>[A-Z]+\d+:.*?)(?: \[[^\]]*\])?\s*$")]
    private static partial Regex BlockError();

    [GeneratedRegex(@": (?:fatal )?error [A-Z]*\d+:")]
    private static partial Regex OtherError();
}
