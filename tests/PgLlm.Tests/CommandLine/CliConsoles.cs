using System.Text;
using System.Text.RegularExpressions;
using PgLlm.Tests.Operations;
using Spectre.Console;

namespace PgLlm.Tests.CommandLine;

/// <summary>Consoles of a given width that are, or are not, a terminal, as the command line sees them.</summary>
internal static partial class CliConsoles
{
    /// <summary>A console writing to <paramref name="writer"/>: a terminal (ANSI, colours) or a pipe (plain).</summary>
    public static IAnsiConsole Create(SynchronizedWriter writer, int width, bool terminal, bool interactive = false)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new Output(writer, terminal, width),
            Ansi = terminal ? AnsiSupport.Yes : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Standard : ColorSystemSupport.NoColors,
            Interactive = interactive ? InteractionSupport.Yes : InteractionSupport.No,
        });
        console.Profile.Width = width;
        console.Profile.Capabilities.Unicode = true;
        return console;
    }

    /// <summary>
    /// The text as lines without their ANSI escape sequences (colours, cursor moves); a live view's redraw
    /// (cursor up, then the same lines again) starts a new line, as on the terminal.
    /// </summary>
    public static string[] VisibleLines(string text) =>
        Ansi().Replace(CursorUp().Replace(text, "\n"), string.Empty).Replace("\r", string.Empty, StringComparison.Ordinal).Split('\n');

    /// <summary>
    /// The figures of one task in the block layout: the task's name on a line of its own, then
    /// "  label   value" lines up to the next blank line.
    /// </summary>
    public static Dictionary<string, string> Block(string text, string task)
    {
        var lines = VisibleLines(text);
        var start = Array.IndexOf(lines, task);
        Assert.True(start >= 0, $"no block for {task} in:\n{text}");
        var figures = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in lines.Skip(start + 1).TakeWhile(l => l.Length > 0))
        {
            var match = Figure().Match(line);
            Assert.True(match.Success, $"not a figure line: '{line}'");
            figures[match.Groups["label"].Value] = match.Groups["value"].Value;
        }

        return figures;
    }

    [GeneratedRegex(@"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07)")]
    private static partial Regex Ansi();

    [GeneratedRegex(@"\x1b\[[0-9]*A")]
    private static partial Regex CursorUp();

    [GeneratedRegex(@"^  (?<label>[a-z]+( [a-z]+)?) {2,}(?<value>\S.*)$")]
    private static partial Regex Figure();

    private sealed class Output(TextWriter writer, bool terminal, int width) : IAnsiConsoleOutput
    {
        public TextWriter Writer => writer;

        public bool IsTerminal => terminal;

        public int Width => width;

        public int Height => 50;

        public void SetEncoding(Encoding encoding)
        {
        }
    }
}
