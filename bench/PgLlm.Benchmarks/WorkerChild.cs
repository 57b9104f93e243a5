using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Options;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Worker;

namespace PgLlm.Benchmarks;

/// <summary>How the benchmark configures the worker process.</summary>
internal sealed record WorkerSettings(int Concurrency, int BatchSize);

/// <summary>
/// The worker as a separate process: this program started with <c>worker</c>. It runs
/// <see cref="PgLlmWorker.RunAsync"/> until its standard input closes, then prints its own peak
/// resident memory (VmHWM of /proc/self/status).
/// </summary>
internal sealed class WorkerChild : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Task<string> _output;
    private readonly Task<string> _errors;

    private WorkerChild(Process process)
    {
        _process = process;
        _output = process.StandardOutput.ReadToEndAsync();
        _errors = process.StandardError.ReadToEndAsync();
    }

    /// <summary>Starts the worker; with <paramref name="batchTier"/>, its batch tier sends batches at once and polls every 100 ms.</summary>
    public static WorkerChild Start(string connectionString, Uri baseUrl, string apiKey, WorkerSettings settings, bool batchTier = false) =>
        new(Process.Start(StartInfo(
                "worker", connectionString, baseUrl.ToString(), apiKey,
                settings.Concurrency.ToString(CultureInfo.InvariantCulture), settings.BatchSize.ToString(CultureInfo.InvariantCulture), batchTier ? "batch" : "live"))
            ?? throw new InvalidOperationException("could not start the worker process"));

    /// <summary>This program again, as a child process with redirected standard streams.</summary>
    internal static ProcessStartInfo StartInfo(params string[] args)
    {
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find this program's path");
        var start = new ProcessStartInfo
        {
            FileName = self,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (Path.GetFileNameWithoutExtension(self).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            start.ArgumentList.Add(typeof(WorkerChild).Assembly.Location);
        }

        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["DOTNET_gcServer"] = "0";
        return start;
    }

    /// <summary>The worker process's resident memory now (VmRSS), in MB.</summary>
    public double CurrentRssMb()
    {
        foreach (var line in File.ReadLines($"/proc/{_process.Id.ToString(CultureInfo.InvariantCulture)}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
            }
        }

        return double.NaN;
    }

    /// <summary>CPU time the worker process used in all, once stopped.</summary>
    public double CpuMilliseconds { get; private set; }

    /// <summary>
    /// Context switches of the worker's threads over its life (voluntary: a thread went to sleep and was woken
    /// again; involuntary: it was preempted), once stopped. Each is a thread wake-up the machine paid for.
    /// </summary>
    public long ContextSwitches { get; private set; }

    /// <summary>Stops the worker (graceful) and returns its peak resident memory in MB.</summary>
    public async Task<double> StopAsync()
    {
        _process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _process.WaitForExitAsync(timeout.Token);
        var output = await _output;
        // The worker's last lines: name=value, one each.
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string? Value(string name) => lines.LastOrDefault(l => l.StartsWith(name + "=", StringComparison.Ordinal))?[(name.Length + 1)..];
        var peak = Value("peak_rss_kb");
        if (_process.ExitCode != 0 || peak is null)
        {
            throw new InvalidOperationException($"the worker process failed (exit {_process.ExitCode}): {output}\n{await _errors}");
        }

        CpuMilliseconds = Value("cpu_ms") is { } cpu ? double.Parse(cpu, CultureInfo.InvariantCulture) : double.NaN;
        ContextSwitches = Value("context_switches") is { } switches ? long.Parse(switches, CultureInfo.InvariantCulture) : -1;
        return double.Parse(peak, CultureInfo.InvariantCulture) / 1024.0;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }

    /// <summary>The child's main: args are connection, base URL, API key, concurrency, batch size, and the batch tier's pace (live or batch).</summary>
    public static async Task<int> RunAsChildAsync(string[] args)
    {
        if (args.Length != 6)
        {
            await Console.Error.WriteLineAsync("usage: worker <connection> <base-url> <api-key> <concurrency> <batch-size> live|batch");
            return 2;
        }

        var options = new PgLlmOptions
        {
            ConnectionString = args[0],
            BaseUrl = args[1],
            ApiKey = args[2],
            Model = "bench-model",
            Worker = new PgLlmWorkerOptions
            {
                Concurrency = int.Parse(args[3], CultureInfo.InvariantCulture),
                BatchSize = int.Parse(args[4], CultureInfo.InvariantCulture),
                PollInterval = TimeSpan.FromSeconds(5),
                Retention = null,
            },
        };
        if (args[5] == "batch")
        {
            options.Batch.MaxWait = TimeSpan.Zero;
            options.Batch.PollInterval = TimeSpan.FromMilliseconds(100);
        }

        await using var dataSource = NpgsqlDataSource.Create(options.ConnectionString);
        using var worker = new PgLlmWorker(dataSource, ChatClientFactory.Create(options), Options.Create(options));
        using var stop = new CancellationTokenSource();
        var run = worker.RunAsync(stop.Token);

        // The parent closes our standard input to stop us.
        await Console.In.ReadToEndAsync();
        await stop.CancelAsync();
        await run;
        Console.WriteLine("peak_rss_kb=" + PeakRssKb().ToString(CultureInfo.InvariantCulture));
        Console.WriteLine("cpu_ms=" + Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture));
        Console.WriteLine("context_switches=" + OwnContextSwitches().ToString(CultureInfo.InvariantCulture));
        return 0;
    }

    /// <summary>
    /// Voluntary and involuntary context switches of all the process's threads over its life, ended ones included
    /// (getrusage: ru_nvcsw and ru_nivcsw, the 17th and 18th of the 18 longs of Linux x86-64's struct rusage).
    /// </summary>
    private static long OwnContextSwitches()
    {
        var usage = new long[18];
        return getrusage(0, usage) == 0 ? usage[16] + usage[17] : -1;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getrusage")]
    [System.Runtime.InteropServices.DefaultDllImportSearchPaths(System.Runtime.InteropServices.DllImportSearchPath.SafeDirectories)]
    private static extern int getrusage(int who, [System.Runtime.InteropServices.Out] long[] usage);

    /// <summary>The process's own peak resident set size (VmHWM), in kB.</summary>
    private static long PeakRssKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
        }

        return -1;
    }
}
