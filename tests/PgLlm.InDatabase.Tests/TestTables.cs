namespace PgLlm.InDatabase.Tests;

/// <summary>A task with few attempts, for failure tests.</summary>
[LlmTable("items")]
public sealed record Item(long Id, string Input)
{
    [LlmColumn("Echo {Input}", MaxAttempts = 3)]
    public string? Output { get; init; }
}

/// <summary>A task's own model and system prompt, and literal braces in its prompt.</summary>
[LlmTable("notes")]
public sealed record Note(long Id, string Body)
{
    [LlmColumn("Summarize {{in one line}}: {Body}", Model = "tiny-model", SystemPrompt = "Answer briefly.")]
    public string? Summary { get; init; }
}

/// <summary>A column of three characters at most.</summary>
[LlmTable("codes")]
public sealed record CodeRow(long Id, string Input)
{
    [LlmColumn("Code for {Input}")]
    public string? Code { get; init; }
}
