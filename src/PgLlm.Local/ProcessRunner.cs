using System.Diagnostics;
using System.Text;

namespace PgLlm.Local;

/// <summary>Result of one finished external command.</summary>
internal sealed record ProcessResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>Combined output, for error messages.</summary>
    public string Output
    {
        get
        {
            var builder = new StringBuilder();
            if (StandardOutput.Length > 0)
            {
                builder.Append("stdout:\n").Append(StandardOutput.TrimEnd()).Append('\n');
            }

            if (StandardError.Length > 0)
            {
                builder.Append("stderr:\n").Append(StandardError.TrimEnd()).Append('\n');
            }

            return builder.Length == 0 ? "(no output)" : builder.ToString();
        }
    }
}

/// <summary>
/// Runs external commands with captured output, optionally as another OS user
/// (<c>runuser -u user -- cmd</c>, or <c>su user -s /bin/sh -c '...'</c> when runuser is missing).
/// </summary>
internal sealed class ProcessRunner
{
    private static readonly string[] RunuserCandidates = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"];
    private static readonly string[] SuCandidates = ["/usr/bin/su", "/bin/su", "/usr/sbin/su", "/sbin/su"];

    private readonly string? _runAsUser;
    private readonly string _workingDirectory;
    private readonly IReadOnlyDictionary<string, string> _environment;

    public ProcessRunner(string? runAsUser, string workingDirectory, IReadOnlyDictionary<string, string> environment)
    {
        _runAsUser = runAsUser;
        _workingDirectory = workingDirectory;
        _environment = environment;
    }

    /// <summary>Finds the tool used to switch users, or null when neither runuser nor su exists.</summary>
    public static string? FindUserSwitcher()
        => FindFirst(RunuserCandidates) ?? FindOnPath("runuser") ?? FindFirst(SuCandidates) ?? FindOnPath("su");

    public async Task<ProcessResult> RunAsync(string fileName, IEnumerable<string> arguments, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var process = new Process { StartInfo = CreateStartInfo(fileName, arguments.ToList()) };
        var commandLine = Describe(process.StartInfo);
        StartOrThrow(process, commandLine);

        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(timeoutSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            TryKill(process);
            cancellationToken.ThrowIfCancellationRequested();
            var partialOutput = await CollectAsync(stdout, stderr).ConfigureAwait(false);
            throw new TimeoutException(
                $"Command timed out after {timeout.TotalSeconds:0.#}s: {commandLine}\n{partialOutput.Output}");
        }

        var (outText, errText) = await CollectAsync(stdout, stderr).ConfigureAwait(false);
        return new ProcessResult(commandLine, process.ExitCode, outText, errText);
    }

    /// <summary>Synchronous variant for process-exit handlers, where async continuations may never run.</summary>
    public ProcessResult? RunBlocking(string fileName, IEnumerable<string> arguments, TimeSpan timeout)
    {
        using var process = new Process { StartInfo = CreateStartInfo(fileName, arguments.ToList()) };
        var commandLine = Describe(process.StartInfo);
        try
        {
            process.Start();
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }

        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            TryKill(process);
            return null;
        }

        var collected = Task.WaitAll([stdout, stderr], TimeSpan.FromSeconds(2));
        return new ProcessResult(
            commandLine,
            process.ExitCode,
            collected ? stdout.Result : string.Empty,
            collected ? stderr.Result : string.Empty);
    }

    /// <summary>The POSIX shell command line that <see cref="RunAsync"/> would execute (including the user switch).</summary>
    public string ToShellCommand(string fileName, IEnumerable<string> arguments)
        => Describe(CreateStartInfo(fileName, arguments.ToList()));

    private static async Task<(string Output, string Error)> CollectAsync(Task<string> stdout, Task<string> stderr)
    {
        // Grandchildren (e.g. a daemonized server) may keep the pipes open; never wait for them forever.
        var both = Task.WhenAll(stdout, stderr);
        var finished = await Task.WhenAny(both, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        if (finished != both)
        {
            return ("(output not collected: pipe still held open by a child process)", string.Empty);
        }

        return (await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    private static void StartOrThrow(Process process, string commandLine)
    {
        try
        {
            process.Start();
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException($"Could not start command: {commandLine}: {ex.Message}", ex);
        }
    }

    private static void TryKill(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            // Already gone.
        }
    }

    private ProcessStartInfo CreateStartInfo(string fileName, List<string> arguments)
    {
        var startInfo = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
            CreateNoWindow = true,
            WorkingDirectory = _workingDirectory,
        };

        foreach (var (name, value) in _environment)
        {
            startInfo.Environment[name] = value;
        }

        if (_runAsUser is null)
        {
            startInfo.FileName = fileName;
            foreach (var argument in arguments)
            {
                startInfo.ArgumentList.Add(argument);
            }

            return startInfo;
        }

        var switcher = FindUserSwitcher()
            ?? throw new InvalidOperationException($"Neither 'runuser' nor 'su' was found; cannot run {fileName} as '{_runAsUser}'.");

        if (Path.GetFileName(switcher) == "runuser")
        {
            startInfo.FileName = switcher;
            startInfo.ArgumentList.Add("-u");
            startInfo.ArgumentList.Add(_runAsUser);
            startInfo.ArgumentList.Add("--");
            startInfo.ArgumentList.Add(fileName);
            foreach (var argument in arguments)
            {
                startInfo.ArgumentList.Add(argument);
            }
        }
        else
        {
            startInfo.FileName = switcher;
            startInfo.ArgumentList.Add(_runAsUser);
            startInfo.ArgumentList.Add("-s");
            startInfo.ArgumentList.Add("/bin/sh");
            startInfo.ArgumentList.Add("-c");
            startInfo.ArgumentList.Add(string.Join(' ', new[] { fileName }.Concat(arguments).Select(ShellQuote)));
        }

        return startInfo;
    }

    private static string Describe(ProcessStartInfo startInfo)
        => string.Join(' ', new[] { startInfo.FileName }.Concat(startInfo.ArgumentList).Select(ShellQuote));

    /// <summary>Quotes one argument for a POSIX shell.</summary>
    internal static string ShellQuote(string value)
    {
        if (value.Length > 0 && value.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c, StringComparison.Ordinal)))
        {
            return value;
        }

        return "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    private static string? FindFirst(IEnumerable<string> candidates) => candidates.FirstOrDefault(File.Exists);

    internal static string? FindOnPath(string executable)
    {
        var path = Environment.GetEnvironmentVariable("PATH");
        if (string.IsNullOrEmpty(path))
        {
            return null;
        }

        foreach (var directory in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, executable);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }
}
