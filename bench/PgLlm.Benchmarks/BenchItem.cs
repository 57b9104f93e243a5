using PgLlm;

namespace PgLlm.Benchmarks;

/// <summary>The benchmark's table: one task, one short prompt, one text column written back.</summary>
[LlmTable("bench_items", Schema = "public")]
public sealed record BenchItem
{
    /// <summary>The key.</summary>
    public long Id { get; init; }

    /// <summary>The text the prompt reads.</summary>
    public required string Body { get; init; }

    /// <summary>A column no task reads: the target of the concurrent user updates.</summary>
    public int Note { get; init; }

    /// <summary>Written by the worker.</summary>
    [LlmColumn("Classify this item in one word. Text: {Body}")]
    public string? Label { get; init; }
}
