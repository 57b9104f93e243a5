using System.Globalization;
using System.Net;
using System.Text;

namespace PgLlm.OperationsConsole;

/// <summary>Small helpers to write the console's HTML: every value is encoded, every number invariant.</summary>
internal static class Html
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string E(string? text) => WebUtility.HtmlEncode(text ?? string.Empty);

    public static string N(long value) => value.ToString("N0", Invariant);

    public static string N(long? value) => value is null ? "–" : N(value.Value);

    public static string Percent(double? value) => value is null ? "–" : (value.Value * 100).ToString("0.0", Invariant) + " %";

    public static string Cost(decimal? value) => value is null ? "–" : value.Value.ToString("0.00####", Invariant);

    public static string Time(DateTimeOffset? value) => value is null ? "–" : value.Value.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", Invariant) + "Z";

    public static string Age(TimeSpan? value)
    {
        if (value is null)
        {
            return "–";
        }

        var span = value.Value;
        return span.TotalSeconds < 1 ? span.TotalMilliseconds.ToString("0", Invariant) + " ms"
            : span.TotalSeconds < 90 ? span.TotalSeconds.ToString("0", Invariant) + " s"
            : span.TotalMinutes < 90 ? span.TotalMinutes.ToString("0", Invariant) + " min"
            : span.TotalHours < 48 ? span.TotalHours.ToString("0.0", Invariant) + " h"
            : span.TotalDays.ToString("0.0", Invariant) + " d";
    }

    public static string Q(string value) => Uri.EscapeDataString(value);

    /// <summary>A bar chart of <paramref name="values"/> (oldest first) as inline SVG, with a line for <paramref name="line"/> when given.</summary>
    public static string Chart(string label, IReadOnlyList<double> values, IReadOnlyList<double?>? line = null, string lineLabel = "")
    {
        const int width = 720, height = 90;
        var sb = new StringBuilder();
        var max = Math.Max(1, values.Count == 0 ? 1 : values.Max());
        var step = values.Count == 0 ? width : (double)width / values.Count;
        sb.Append(Invariant, $"<svg class=\"chart\" viewBox=\"0 0 {width} {height + 14}\" role=\"img\" aria-label=\"{E(label)}\">");
        for (var i = 0; i < values.Count; i++)
        {
            var h = values[i] / max * height;
            if (h > 0)
            {
                sb.Append(Invariant, $"<rect x=\"{i * step:0.##}\" y=\"{height - h:0.##}\" width=\"{Math.Max(1, step - 1):0.##}\" height=\"{h:0.##}\"/>");
            }
        }

        if (line is not null && line.Any(v => v is not null))
        {
            var lineMax = Math.Max(0.001, line.Where(v => v is not null).Max(v => v!.Value));
            var points = string.Join(' ', line.Select((v, i) => (v, i)).Where(p => p.v is not null)
                .Select(p => string.Create(Invariant, $"{(p.i + 0.5) * step:0.##},{height - (p.v!.Value / lineMax * height):0.##}")));
            sb.Append(Invariant, $"<polyline points=\"{points}\"/>");
            sb.Append(Invariant, $"<text x=\"{width}\" y=\"{height + 12}\" text-anchor=\"end\">{E(lineLabel)} max {lineMax:0.00}</text>");
        }

        sb.Append(Invariant, $"<text x=\"0\" y=\"{height + 12}\">{E(label)} (max {max:0}) · 24 h</text></svg>");
        return sb.ToString();
    }

    public const string Style = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
        header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
        header a{color:#cfd8ea;text-decoration:none}header a.on{color:#fff;font-weight:600}header .who{margin-left:auto;color:#9aa7bd}
        main{padding:1rem;max-width:1200px}h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.2rem 0 .5rem}
        table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:1rem}th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
        th{background:#eef0f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
        .card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem}
        .figures{display:flex;flex-wrap:wrap;gap:.4rem 1.4rem;margin:.4rem 0}.figures div{min-width:7rem}.figures b{display:block;font-size:1.15rem}
        .chart{width:100%;max-width:720px;height:auto;display:block;margin:.3rem 0}.chart rect{fill:#5b8def}.chart polyline{fill:none;stroke:#e4572e;stroke-width:1.5}.chart text{font-size:10px;fill:#5c6577}
        .paused{color:#b35c00;font-weight:600}.flash{background:#e7f5ea;border:1px solid #9fd3ab;padding:.5rem .8rem;margin-bottom:1rem}.flash.error{background:#fdeaea;border-color:#e6a1a1}
        form.inline{display:inline}button{cursor:pointer}pre{white-space:pre-wrap;margin:0;font-size:12px;max-width:40rem}
        .muted{color:#6b7485}input,select{padding:.2rem}
        """;
}
