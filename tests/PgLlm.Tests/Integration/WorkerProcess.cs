using System.Diagnostics;
using System.Text;
using PgLlm.Hosting;

namespace PgLlm.Tests.Integration;

/// <summary>
/// A <c>pgllm worker</c> child process, as a deployment runs it: its settings through <c>PgLlm__*</c>
/// environment variables, its output kept (the last part of it) for a failing assertion's message.
/// </summary>
internal sealed class WorkerProcess : IDisposable
{
    private const int KeptOutput = 4000;
    private readonly StringBuilder _output = new();

    private WorkerProcess(string id, Process process)
    {
        Id = id;
        Process = process;
    }

    public string Id { get; }

    public Process Process { get; }

    /// <summary>The last part of what the worker wrote to stdout and stderr.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                var text = _output.ToString();
                return text.Length > KeptOutput ? text[^KeptOutput..] : text;
            }
        }
    }

    /// <summary>
    /// Starts <c>pgllm worker --concurrency N</c> on <paramref name="connectionString"/> against the endpoint, as worker
    /// <paramref name="id"/>, with <paramref name="settings"/> as <c>PgLlm__...</c> variables (keys without the prefix,
    /// e.g. <c>Worker__Lease</c>).
    /// </summary>
    public static WorkerProcess Start(string id, string connectionString, Uri baseUrl, string apiKey, int concurrency, IReadOnlyDictionary<string, string> settings)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "PgLlm.Cli.dll"), "worker", "--concurrency", concurrency.ToString(System.Globalization.CultureInfo.InvariantCulture), "--connection", connectionString })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["PgLlm__BaseUrl"] = baseUrl.ToString();
        start.Environment["PgLlm__ApiKey"] = apiKey;
        start.Environment["PgLlm__Model"] = "test-model";
        start.Environment["PgLlm__Worker__WorkerId"] = id;
        foreach (var (key, value) in settings)
        {
            start.Environment["PgLlm__" + key] = value;
        }

        start.Environment.Remove(DedicatedWorkerProcess.InlineSocketCompletionsVariable);
        var worker = new WorkerProcess(id, Process.Start(start)!);
        worker.Process.OutputDataReceived += (_, e) => worker.Append(e.Data);
        worker.Process.ErrorDataReceived += (_, e) => worker.Append(e.Data);
        worker.Process.BeginOutputReadLine();
        worker.Process.BeginErrorReadLine();
        return worker;
    }

    public void Dispose()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
            Process.WaitForExit(10_000);
        }

        Process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }
}
