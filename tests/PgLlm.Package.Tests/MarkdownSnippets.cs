namespace PgLlm.Package.Tests;

/// <summary>One fenced <c>```csharp</c> block of a Markdown file.</summary>
/// <param name="Line">The 1-based line of its opening fence.</param>
/// <param name="Code">The code between the fences, with the fence's indentation removed.</param>
/// <param name="Ignored">Whether the line <c>&lt;!-- snippet: ignore --&gt;</c> stands right before the fence.</param>
internal sealed record CodeBlock(int Line, string Code, bool Ignored);

/// <summary>Reads the C# blocks of the docs (README.md and docs/*.md) that the doc-snippet test compiles.</summary>
internal static class MarkdownSnippets
{
    /// <summary>The line that, right before a fence, keeps a block (a fragment) out of the compilation.</summary>
    public const string IgnoreMarker = "<!-- snippet: ignore -->";

    /// <summary>README.md and docs/*.md, relative to the repository's root, in a stable order.</summary>
    public static IEnumerable<string> DocumentFiles(string root)
    {
        yield return "README.md";
        foreach (var file in Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order(StringComparer.Ordinal))
        {
            yield return "docs/" + Path.GetFileName(file);
        }
    }

    /// <summary>The <c>csharp</c> blocks of a Markdown text.</summary>
    public static List<CodeBlock> Read(string markdown)
    {
        var lines = markdown.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var blocks = new List<CodeBlock>();
        for (var i = 0; i < lines.Length; i++)
        {
            var trimmed = lines[i].TrimStart();
            if (!trimmed.StartsWith("```", StringComparison.Ordinal))
            {
                continue;
            }

            var indent = lines[i].Length - trimmed.Length;
            var fence = trimmed[..(trimmed.Length - trimmed.TrimStart('`').Length)];
            var info = trimmed[fence.Length..].Trim();
            var end = i + 1;
            while (end < lines.Length && !lines[end].TrimStart().StartsWith(fence, StringComparison.Ordinal))
            {
                end++;
            }

            if (info.Split(' ', 2)[0] is "csharp" or "cs" or "c#")
            {
                var previous = i - 1;
                while (previous >= 0 && lines[previous].Trim().Length == 0)
                {
                    previous--;
                }

                var ignored = previous >= 0 && lines[previous].Trim() == IgnoreMarker;
                var code = string.Join('\n', lines[(i + 1)..Math.Min(end, lines.Length)].Select(l => Unindent(l, indent)));
                blocks.Add(new CodeBlock(i + 1, code, ignored));
            }

            i = end;
        }

        return blocks;
    }

    private static string Unindent(string line, int indent)
    {
        var remove = 0;
        while (remove < indent && remove < line.Length && line[remove] == ' ')
        {
            remove++;
        }

        return line[remove..];
    }
}
