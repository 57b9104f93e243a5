using System.Diagnostics;
using System.Globalization;
using Npgsql;

namespace PgLlm.Benchmarks;

/// <summary>
/// The user-update clients as a process of their own (this program started with <c>clients</c>), like
/// an application: in the benchmark's process they would share a garbage collector and a thread pool
/// with the model endpoint, and its pauses would count against the database. Each window is one line
/// on the child's standard input (<c>seconds low-id high-id</c>), answered with one line
/// (<c>updates seconds deadlocks p50-us p90-us p99-us</c>).
/// </summary>
internal sealed class UserClients : IAsyncDisposable
{
    private const int Clients = 2;

    private readonly Process _process;

    private UserClients(Process process) => _process = process;

    public static UserClients Start(string connectionString) =>
        new(Process.Start(WorkerChild.StartInfo("clients", connectionString))
            ?? throw new InvalidOperationException("could not start the user-clients process"));

    /// <summary>Two clients update random rows between the ids for <paramref name="seconds"/>.</summary>
    public async Task<UpdateWindow> RunAsync(long lowId, long highId, double seconds)
    {
        await _process.StandardInput.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{seconds} {lowId} {highId}"));
        await _process.StandardInput.FlushAsync();
        var line = await _process.StandardOutput.ReadLineAsync()
                   ?? throw new InvalidOperationException("the user-clients process stopped: " + await _process.StandardError.ReadToEndAsync());
        var parts = line.Split(' ');
        double Number(int i) => double.Parse(parts[i], CultureInfo.InvariantCulture);
        return new UpdateWindow(Number(0) / Number(1), int.Parse(parts[2], CultureInfo.InvariantCulture), Number(3), Number(4), Number(5));
    }

    public async ValueTask DisposeAsync()
    {
        _process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }

    /// <summary>The child's main: args are the connection string; windows come on standard input.</summary>
    public static async Task<int> RunAsChildAsync(string[] args)
    {
        if (args.Length != 1)
        {
            await Console.Error.WriteLineAsync("usage: clients <connection>");
            return 2;
        }

        await using var dataSource = NpgsqlDataSource.Create(args[0]);
        while (await Console.In.ReadLineAsync() is { } window)
        {
            var parts = window.Split(' ');
            var (updates, seconds, deadlocks, latencies) = Run(
                dataSource,
                long.Parse(parts[1], CultureInfo.InvariantCulture),
                long.Parse(parts[2], CultureInfo.InvariantCulture),
                TimeSpan.FromSeconds(double.Parse(parts[0], CultureInfo.InvariantCulture)));
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{updates} {seconds:R} {deadlocks} {Stats.Percentile(latencies, 50):0} {Stats.Percentile(latencies, 90):0} {Stats.Percentile(latencies, 99):0}"));
            Console.Out.Flush();
        }

        return 0;
    }

    /// <summary>
    /// Each client is a dedicated thread making synchronous calls, one prepared UPDATE after another; each
    /// update's latency (statement and commit, as the application sees it) is kept, in microseconds.
    /// </summary>
    private static (long Updates, double Seconds, int Deadlocks, List<double> LatenciesUs) Run(NpgsqlDataSource dataSource, long lowId, long highId, TimeSpan duration)
    {
        var deadlocks = 0;
        var counts = new long[Clients];
        var latencies = new List<double>[Clients];
        var clock = Stopwatch.StartNew();
        var threads = Enumerable.Range(0, Clients).Select(client => new Thread(() =>
        {
            var random = new Random(client);
            var mine = latencies[client] = new List<double>(8_192);
            using var connection = dataSource.OpenConnection();
            using var update = new NpgsqlCommand("UPDATE public.bench_items SET note = note + 1 WHERE id = $1", connection);
            var id = new NpgsqlParameter<long> { TypedValue = 0 };
            update.Parameters.Add(id);
            update.Prepare();
            while (clock.Elapsed < duration)
            {
                id.TypedValue = random.NextInt64(lowId, highId + 1);
                try
                {
                    var started = Stopwatch.GetTimestamp();
                    update.ExecuteNonQuery();
                    mine.Add(Stopwatch.GetElapsedTime(started).TotalMicroseconds);
                    counts[client]++;
                }
                catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.DeadlockDetected)
                {
                    Interlocked.Increment(ref deadlocks);
                }
            }
        })
        { IsBackground = true, Name = "user client " + client }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        return (counts.Sum(), clock.Elapsed.TotalSeconds, deadlocks, latencies.SelectMany(l => l).ToList());
    }
}

/// <summary>One window of user updates: the rate, deadlocks, and update latency percentiles in microseconds.</summary>
internal sealed record UpdateWindow(double Tps, int Deadlocks, double P50Us, double P90Us, double P99Us)
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Tps:0} tps, {Deadlocks} deadlocks, latency p50 {P50Us:0} us, p90 {P90Us:0} us, p99 {P99Us:0} us");
}
