namespace PgLlm.OperationsConsole.Tests;

/// <summary>The task the console tests act on: retried, paused, searched.</summary>
[LlmTable("tickets")]
[LlmTask("Category of: {Body}", nameof(Category), Name = "ticket_category")]
public sealed record Ticket(long Id, string Body)
{
    public string? Category { get; init; }
}

/// <summary>A second task, which keeps running while the first is paused.</summary>
[LlmTable("notes")]
[LlmTask("Summarize: {Body}", nameof(Summary), Name = "note_summary")]
public sealed record Note(long Id, string Body)
{
    public string? Summary { get; init; }
}
