using PuppeteerSharp;

namespace PgLlm.OperationsConsole.Tests;

/// <summary>The screenshots of docs/console.md: written to docs/console/NAME.png when PGLLM_UPDATE_SCREENSHOTS=1, else not taken.</summary>
internal static class Screenshots
{
    public static async Task TakeAsync(IPage page, string name)
    {
        if (Environment.GetEnvironmentVariable("PGLLM_UPDATE_SCREENSHOTS") != "1")
        {
            return;
        }

        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "PgLlm.sln")))
        {
            directory = directory.Parent;
        }

        Assert.NotNull(directory);
        var target = Path.Combine(directory.FullName, "docs", "console");
        Directory.CreateDirectory(target);
        await page.ScreenshotAsync(Path.Combine(target, name + ".png"), new ScreenshotOptions { FullPage = true });
        Assert.True(new FileInfo(Path.Combine(target, name + ".png")).Length > 0);
    }
}
