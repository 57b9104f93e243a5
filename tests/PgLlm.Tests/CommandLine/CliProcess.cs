using System.Diagnostics;
using System.Text;

namespace PgLlm.Tests.CommandLine;

/// <summary>The built <c>pgllm</c> tool run as a child process, its output piped, as a script or a service manager runs it.</summary>
internal sealed class CliProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly StringBuilder _errors = new();
    private readonly DirectoryInfo _folder;

    private CliProcess(Process process, DirectoryInfo folder)
    {
        _process = process;
        _folder = folder;
    }

    public int Id => _process.Id;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public string Errors
    {
        get
        {
            lock (_errors)
            {
                return _errors.ToString();
            }
        }
    }

    /// <summary>Starts <c>pgllm</c> with <paramref name="args"/> in an empty folder (no appsettings.json), with only the given PgLlm settings in its environment.</summary>
    public static CliProcess Start(IReadOnlyList<string> args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var folder = Directory.CreateTempSubdirectory("pgllm-cli-");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = folder.FullName,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "PgLlm.Cli.dll"));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("PGLLM_", StringComparison.OrdinalIgnoreCase) || k.StartsWith("PgLlm__", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        var process = new Process { StartInfo = start };
        var cli = new CliProcess(process, folder);
        process.OutputDataReceived += (_, e) => Append(cli._output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(cli._errors, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return cli;
    }

    /// <summary>Waits until the output satisfies <paramref name="condition"/>; fails with what was printed if the process exits or time runs out first.</summary>
    public async Task<string> WaitForOutputAsync(Func<string, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var output = Output;
            if (condition(output))
            {
                return output;
            }

            if (_process.HasExited)
            {
                _process.WaitForExit();
                Assert.Fail($"pgllm exited ({_process.ExitCode}) first. stdout:\n{Output}\nstderr:\n{Errors}");
            }

            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for pgllm. stdout:\n{output}\nstderr:\n{Errors}");
            await Task.Delay(50);
        }
    }

    /// <summary>Sends SIGINT, as Ctrl+C in a terminal does.</summary>
    public void Interrupt() => Signal("INT");

    /// <summary>Sends SIGTERM, as a service manager (systemd, docker stop) does to stop a service.</summary>
    public void Terminate() => Signal("TERM");

    private void Signal(string name)
    {
        using var kill = Process.Start("kill", ["-" + name, _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    /// <summary>Waits for the process to exit and for its output to be read to the end; returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cancellation = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cancellation.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"pgllm did not exit within {timeout}. stdout:\n{Output}\nstderr:\n{Errors}");
        }

        _process.WaitForExit();
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
        _folder.Delete(recursive: true);
    }

    private static void Append(StringBuilder buffer, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (buffer)
        {
            buffer.Append(line).Append('\n');
        }
    }
}
