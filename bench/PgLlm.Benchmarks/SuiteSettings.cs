namespace PgLlm.Benchmarks;

/// <summary>Sizes of every measurement; <c>--quick</c> shrinks them all.</summary>
internal sealed record SuiteSettings
{
    public bool Quick { get; init; }

    public string OutputPath { get; init; } = DefaultOutput();

    public string? Only { get; init; }

    public bool PrintStatements { get; init; }

    /// <summary>Seconds of each insert-rate window, and the number of plain/trigger pairs.</summary>
    public double InsertSeconds => Quick ? 0.5 : 1;

    public int InsertPairs => Quick ? 4 : 16;

    /// <summary>Rows per statement in the trigger-cost measurement, empty/backlog pairs, and the backlog size.</summary>
    public int TriggerRows => Quick ? 2_000 : 5_000;

    public int TriggerPairs => Quick ? 4 : 48;

    public int Backlog => Quick ? 20_000 : 100_000;

    /// <summary>Jobs per drain run with an instant model, and repeats.</summary>
    public int DrainJobs => Quick ? 4_000 : 20_000;

    public int DrainRepeats => Quick ? 1 : 3;

    /// <summary>Jobs of the 200 ms run: 20,000 in the full run (about 31 s at full efficiency).</summary>
    public int SlowDrainJobs => Quick ? 1_920 : 20_000;

    public int SlowDrainRepeats => Quick ? 1 : 2;

    public int PickupJobs => Quick ? 60 : 300;

    /// <summary>Seconds of each user-update window, and the number of idle/busy pairs.</summary>
    public double UpdateSeconds => Quick ? 0.5 : 1;

    public int UpdateRepeats => Quick ? 4 : 40;

    public int RssJobs => Quick ? 10_000 : 100_000;

    /// <summary>Re-run jobs pending at low priority while live pickup is measured: 100,000 in the full run.</summary>
    public int RerunJobs => Quick ? 10_000 : 100_000;

    /// <summary>Jobs of the 2 s model run with 1,000 calls in flight: 50,000 in the full run (100 s at full efficiency).</summary>
    public int WideDrainJobs => Quick ? 5_000 : 50_000;

    /// <summary>Jobs of each side of the scaling measurement (one worker, then four): 100,000 in the full run (about 40 s each).</summary>
    public int ScalingJobs => Quick ? 10_000 : 100_000;

    /// <summary>Existing rows a backfill enqueues: 1,000,000 in the full run.</summary>
    public int BackfillRows => Quick ? 50_000 : 1_000_000;

    /// <summary>Existing rows backfilled through the batch tier: 1,000,000 in the full run.</summary>
    public int BatchBackfillRows => Quick ? 50_000 : 1_000_000;

    /// <summary>Whether <paramref name="group"/> is measured: every group, or those <c>--only</c> names (comma-separated).</summary>
    /// <summary>Finished jobs in history for the console's overview (the issue's million).</summary>
    public int ConsoleHistoryJobs => Quick ? 100_000 : 1_000_000;

    /// <summary>Reads of the console's overview measured.</summary>
    public int ConsoleReads => Quick ? 20 : 100;

    public bool Runs(string group) => Only is null || Only.Split(',', StringSplitOptions.TrimEntries).Contains(group, StringComparer.OrdinalIgnoreCase);

    public static SuiteSettings Parse(string[] args)
    {
        var settings = new SuiteSettings();
        for (var i = 0; i < args.Length; i++)
        {
            settings = args[i] switch
            {
                "--quick" => settings with { Quick = true },
                "--stats" => settings with { PrintStatements = true },
                "--out" when i + 1 < args.Length => settings with { OutputPath = args[++i] },
                "--only" when i + 1 < args.Length => settings with { Only = CheckGroups(args[++i]) },
                _ => throw new ArgumentException($"unknown argument '{args[i]}'; see the top of Program.cs"),
            };
        }

        return settings;
    }

    /// <summary>The measurement groups <c>--only</c> accepts.</summary>
    public static readonly string[] Groups = ["insert", "trigger", "drain_0ms", "drain_200ms", "drain_2s_1000", "scaling", "pickup", "rerun_pickup", "update", "rss", "backfill", "console"];

    private static string CheckGroups(string only)
    {
        var unknown = only.Split(',', StringSplitOptions.TrimEntries).Where(g => !Groups.Contains(g, StringComparer.OrdinalIgnoreCase)).ToArray();
        return unknown.Length == 0
            ? only
            : throw new ArgumentException($"unknown measurement group '{string.Join("', '", unknown)}' for --only; the groups: {string.Join(", ", Groups)}");
    }

    /// <summary>bench/results/latest.json of the repository this program was built from, else of the current directory.</summary>
    private static string DefaultOutput()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "PgLlm.sln")))
            {
                return Path.Combine(dir.FullName, "bench", "results", "latest.json");
            }
        }

        return Path.Combine(Directory.GetCurrentDirectory(), "bench", "results", "latest.json");
    }
}
