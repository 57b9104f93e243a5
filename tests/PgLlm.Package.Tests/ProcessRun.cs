using System.Diagnostics;
using System.Text;

namespace PgLlm.Package.Tests;

/// <summary>The outcome of one child process: its exit code and everything it printed.</summary>
public sealed record ProcessResult(string Command, int ExitCode, string Output, string Error)
{
    /// <summary>Stdout and stderr, for assertion messages.</summary>
    public string Describe() =>
        $"`{Command}` exited {ExitCode}.{Environment.NewLine}stdout:{Environment.NewLine}{Tail(Output)}{Environment.NewLine}stderr:{Environment.NewLine}{Tail(Error)}";

    private static string Tail(string text) => text.Length <= 6000 ? text : "..." + text[^6000..];
}

/// <summary>Runs child processes (dotnet, bash, the installed tool) with a bounded wait.</summary>
public static class ProcessRun
{
    /// <summary>
    /// Runs <paramref name="fileName"/> with <paramref name="arguments"/> in <paramref name="workingDirectory"/>, with
    /// <paramref name="environment"/> added to (or, for null values, removed from) this process's environment.
    /// The process tree is killed when it outlives <paramref name="timeout"/>.
    /// </summary>
    public static async Task<ProcessResult> RunAsync(
        string fileName,
        IEnumerable<string> arguments,
        string workingDirectory,
        IReadOnlyDictionary<string, string?> environment,
        TimeSpan timeout)
    {
        var start = new ProcessStartInfo(fileName)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            if (value is null)
            {
                start.Environment.Remove(name);
            }
            else
            {
                start.Environment[name] = value;
            }
        }

        var command = fileName + " " + string.Join(' ', start.ArgumentList);
        var output = new StringBuilder();
        var error = new StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (output)
                {
                    output.AppendLine(e.Data);
                }
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (error)
                {
                    error.AppendLine(e.Data);
                }
            }
        };

        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var cancellation = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancellation.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"`{command}` did not finish within {timeout}.{Environment.NewLine}stdout:{Environment.NewLine}{output}{Environment.NewLine}stderr:{Environment.NewLine}{error}");
        }

        // WaitForExitAsync returns once the output streams have been read to their end.
        lock (output)
        {
            lock (error)
            {
                return new ProcessResult(command, process.ExitCode, output.ToString(), error.ToString());
            }
        }
    }
}
