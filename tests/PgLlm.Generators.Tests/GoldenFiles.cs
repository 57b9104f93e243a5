namespace PgLlm.Generators.Tests;

/// <summary>
/// Snapshot comparison against files checked into Golden/. Set PGLLM_UPDATE_GOLDEN=1 to rewrite them
/// on purpose; otherwise any drift fails the test with the first differing line.
/// </summary>
internal static class GoldenFiles
{
    public static void Verify(string relativePath, string actual)
    {
        var path = Path.Combine(GeneratorHarness.SourceDirectory(), "Golden", relativePath);
        actual = actual.ReplaceLineEndings("\n");
        if (Environment.GetEnvironmentVariable("PGLLM_UPDATE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, actual);
            return;
        }

        Assert.True(File.Exists(path), $"Golden file {relativePath} is missing; run the tests with PGLLM_UPDATE_GOLDEN=1 to create it.");
        var expected = File.ReadAllText(path).ReplaceLineEndings("\n");
        if (expected == actual)
        {
            return;
        }

        var expectedLines = expected.Split('\n');
        var actualLines = actual.Split('\n');
        var line = 0;
        while (line < expectedLines.Length && line < actualLines.Length && expectedLines[line] == actualLines[line])
        {
            line++;
        }

        Assert.Fail(
            $"{relativePath} drifted at line {line + 1}.\n" +
            $"expected: {(line < expectedLines.Length ? expectedLines[line] : "(end of file)")}\n" +
            $"actual:   {(line < actualLines.Length ? actualLines[line] : "(end of file)")}\n" +
            "If the change is intended, rerun with PGLLM_UPDATE_GOLDEN=1 and review the diff.");
    }
}
