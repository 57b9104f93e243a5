namespace PgLlm.Benchmarks;

internal static class Stats
{
    /// <summary>
    /// Measures two sides in alternation, <paramref name="pairs"/> times (a-b, b-a, a-b, ...), so that each
    /// pair sees the machine at the same moment and neither side always goes first: the values of each side
    /// and each pair's ratio b / a, in order.
    /// </summary>
    public static async Task<(List<double> A, List<double> B, List<double> Ratios)> AlternatingPairsAsync(
        int pairs, Func<Task<double>> a, Func<Task<double>> b)
    {
        var (first, second, ratios) = (new List<double>(), new List<double>(), new List<double>());
        for (var pair = 0; pair < pairs; pair++)
        {
            double x, y;
            if (pair % 2 == 0)
            {
                x = await a();
                y = await b();
            }
            else
            {
                y = await b();
                x = await a();
            }

            first.Add(x);
            second.Add(y);
            ratios.Add(y / x);
        }

        return (first, second, ratios);
    }

    public static double Median(IReadOnlyList<double> values) => Percentile(values, 50);

    /// <summary>Nearest-rank percentile.</summary>
    public static double Percentile(IReadOnlyList<double> values, double percent)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }

        var sorted = values.OrderBy(v => v).ToArray();
        var rank = (int)Math.Ceiling(percent / 100.0 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }
}
