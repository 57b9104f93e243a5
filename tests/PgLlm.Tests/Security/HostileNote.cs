using System.ComponentModel.DataAnnotations;
using System.ComponentModel.DataAnnotations.Schema;

namespace PgLlm.Tests.Security;

/// <summary>A table whose schema, table and column names all need quoting: quotes, spaces, capitals, non-ASCII.</summary>
[LlmTable("Ünïcödé \"Notes\"", Schema = "Sécurité 'Q'")]
public sealed record HostileNote
{
    [Key]
    [Column("Kéy ID")]
    public long Id { get; init; }

    [Column("Body \"Text\"")]
    public required string Body { get; init; }

    /// <summary>No task writes it: answers naming it must be ignored.</summary>
    [Column("Untouched ✓")]
    public string? Untouched { get; init; }

    [LlmColumn("Summarize {{this}}: {Body}", Name = "summary")]
    [Column("Summary 'Σ'")]
    public string? Summary { get; init; }
}
