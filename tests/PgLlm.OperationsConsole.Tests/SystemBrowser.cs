namespace PgLlm.OperationsConsole.Tests;

/// <summary>The system's Chromium (the Debian package <c>chromium</c>, which tests/run.sh installs when missing); nothing is downloaded.</summary>
internal static class SystemBrowser
{
    private static readonly string[] Names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

    /// <summary>The browser's executable: PGLLM_CHROMIUM, else /usr/bin/chromium, else the first of the usual names on PATH; null with the reason when none.</summary>
    public static string? Find(out string reason)
    {
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("PGLLM_CHROMIUM") is { Length: > 0 } configured)
        {
            candidates.Add(configured);
        }

        candidates.Add("/usr/bin/chromium");
        candidates.AddRange((Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .SelectMany(directory => Names.Select(name => Path.Combine(directory, name))));
        var found = candidates.FirstOrDefault(File.Exists);
        reason = found is null
            ? "no Chromium found (install the Debian package chromium, or set PGLLM_CHROMIUM to a Chrome or Chromium executable)"
            : string.Empty;
        return found;
    }
}

/// <summary>A test that drives the console in a real browser: skipped, with the reason, when the system has none.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class BrowserFactAttribute : FactAttribute
{
    public BrowserFactAttribute()
    {
        if (SystemBrowser.Find(out var reason) is null)
        {
            Skip = reason;
        }
    }
}
