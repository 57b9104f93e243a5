using System.Text.Json.Nodes;

namespace PgLlm.Benchmarks;

/// <summary>The targets, to print beside each result.</summary>
internal static class Targets
{
    private static readonly Dictionary<string, (string Text, Func<double, bool> Met)> ByKey = new(StringComparer.Ordinal)
    {
        ["insert_ratio"] = (">= 0.7", v => v >= 0.7),
        ["insert_ratio_8_clients"] = (">= 0.5", v => v >= 0.5),
        ["backlog_cost_ratio"] = ("<= 1.1", v => v <= 1.1),
        ["drain_jobs_per_s_0ms"] = (">= 5000", v => v >= 5000),
        ["drain_efficiency_200ms"] = (">= 0.95", v => v >= 0.95),
        ["pickup_ms_p50"] = ("<= 2", v => v <= 2),
        ["pickup_ms_p99"] = ("<= 10", v => v <= 10),
        ["user_update_ratio"] = (">= 0.9", v => v >= 0.9),
        ["user_update_ratio_instant_model"] = ("reported (CPU-bound stress)", _ => true),
        ["user_deadlocks"] = ("0", v => v == 0),
        ["worker_peak_rss_mb"] = ("<= 100", v => v <= 100),
        ["drain_efficiency_2s_1000"] = (">= 0.97", v => v >= 0.97),
        ["worker_peak_rss_mb_1000"] = ("<= 150", v => v <= 150),
        ["drain_scaling_4_workers"] = (">= 0.95", v => v >= 0.95),
        ["drain_scaling_4_workers_repeated_calls"] = ("0", v => v == 0),
        ["drain_scaling_4_workers_repeated_attempts"] = ("0", v => v == 0),
        // Live work first: within twice the idle pickup of the same worker and model (pickup_ms_p50_before_rerun).
        ["pickup_during_rerun_ratio"] = ("<= 2", v => v <= 2),
        ["batch_backfill_rows_per_s"] = ("reported (with its bottleneck)", _ => true),
        ["batch_worker_peak_rss_mb"] = ("<= 200", v => v <= 200),
        // The operations console's overview with 1,000,000 finished jobs in history.
        ["console_overview_ms_p50"] = ("< 100", v => v < 100),
        ["console_overview_ms_p99"] = ("< 100", v => v < 100),
        ["console_overview_ms_first"] = ("reported (reads the week's earlier days, kept 10 minutes)", _ => true),
    };

    /// <summary>Targets relative to another key of the same run: at most Factor times its value.</summary>
    private static readonly Dictionary<string, (string Other, double Factor)> Relative = new(StringComparer.Ordinal)
    {
        ["pickup_ms_p50_during_rerun"] = ("pickup_ms_p50_before_rerun", 2),
    };

    /// <summary>
    /// The key's target and whether the value meets it; with <paramref name="judged"/> false (a quick run, whose
    /// smaller sizes are a smoke check, not the measurement the targets are for), the target alone.
    /// </summary>
    public static string Describe(string key, JsonNode? value, bool judged, JsonObject? results = null)
    {
        if (Relative.TryGetValue(key, out var relative) && results?[relative.Other] is JsonValue other && other.TryGetValue(out double baseline)
            && value is JsonValue own && own.TryGetValue(out double measured))
        {
            var text = $"<= {relative.Factor:0.#}x {relative.Other} ({relative.Factor * baseline:0.###})";
            return !judged ? text + "  (quick run: not judged)" : text + (measured <= relative.Factor * baseline ? "  met" : "  NOT MET");
        }

        if (!ByKey.TryGetValue(key, out var target) || value is not JsonValue number || !number.TryGetValue(out double v))
        {
            return string.Empty;
        }

        if (target.Text.StartsWith("reported", StringComparison.Ordinal))
        {
            return target.Text;
        }

        return !judged ? target.Text + "  (quick run: not judged)"
            : target.Text + (target.Met(v) ? "  met" : "  NOT MET");
    }

}
