using System.Text.Json;

namespace PgLlm.Tests.Operations;

/// <summary>
/// The runtime settings the pgllm tool ships with (src/PgLlm.WorkerHost.props): each was measured on
/// the worker (docs/benchmarks.md) and is lost silently if the import goes, so the built tool's
/// runtimeconfig.json is read back here.
/// </summary>
public sealed class WorkerHostSettingsTests
{
    [Fact]
    public void The_pgllm_tool_runs_with_the_measured_worker_host_settings()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "PgLlm.Cli.runtimeconfig.json");
        Assert.True(File.Exists(path), $"{path} was not built beside the tests");
        using var config = JsonDocument.Parse(File.ReadAllText(path));
        var properties = config.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");

        // The gen0 budget is the GC's youngest generation: bounded, the worker's peak memory no longer
        // follows the size of the CPU cache the machine reports.
        Assert.Equal(8L * 1024 * 1024, properties.GetProperty("System.GC.Gen0MaxBudget").GetInt64());
        Assert.Equal(0, properties.GetProperty("System.Threading.ThreadPool.UnfairSemaphoreSpinLimit").GetInt32());
        Assert.False(properties.GetProperty("System.Runtime.TieredPGO").GetBoolean());
        // Workstation GC: the server GC's heap per core would multiply the budget.
        Assert.False(properties.TryGetProperty("System.GC.Server", out var server) && server.GetBoolean());
    }
}
