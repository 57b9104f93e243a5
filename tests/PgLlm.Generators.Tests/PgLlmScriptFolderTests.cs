using PgLlm.Migrations;

namespace PgLlm.Generators.Tests;

/// <summary>The file rules the build's SQL folder and <c>pgllm script</c> share (PgLlmScriptFolder).</summary>
public sealed class PgLlmScriptFolderTests : IDisposable
{
    private static readonly PgLlmScript Tickets = new("1000-public.tickets", "abc", PgLlmScriptKind.Table, PgLlmScriptFolder.GeneratedHeader + " from T.\nSELECT 1;\n");

    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("pgllm-scriptfolder-");

    public void Dispose() => _folder.Delete(recursive: true);

    [Fact]
    public void Write_leaves_a_file_with_the_same_content_alone_even_with_other_line_endings()
    {
        var path = Path.Combine(_folder.FullName, Tickets.FileName);
        File.WriteAllText(path, Tickets.Sql.ReplaceLineEndings("\r\n"));
        var old = new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(path, old);

        Assert.Empty(PgLlmScriptFolder.Write(_folder.FullName, [Tickets]));
        Assert.Equal(old, File.GetLastWriteTimeUtc(path));
        Assert.Empty(PgLlmScriptFolder.Compare(_folder.FullName, [Tickets]));
    }

    [Fact]
    public void Only_generated_files_of_gone_tables_are_stale_and_deleted()
    {
        var own = Path.Combine(_folder.FullName, "0001-schema.sql");
        File.WriteAllText(own, "CREATE TABLE t (id bigint PRIMARY KEY);\n");
        var gone = Path.Combine(_folder.FullName, "1000-public.gone.sql");
        File.WriteAllText(gone, PgLlmScriptFolder.GeneratedHeader + " from Gone.\nSELECT 2;\n");

        Assert.Equal(["1000-public.tickets.sql: missing", "1000-public.gone.sql: no generated script has this name"], PgLlmScriptFolder.Compare(_folder.FullName, [Tickets]));
        Assert.Equal(["1000-public.tickets.sql: written", "1000-public.gone.sql: deleted"], PgLlmScriptFolder.Write(_folder.FullName, [Tickets]));
        Assert.False(File.Exists(gone));
        Assert.True(File.Exists(own));
        Assert.Equal(Tickets.Sql, File.ReadAllText(Path.Combine(_folder.FullName, Tickets.FileName)));
        Assert.Empty(PgLlmScriptFolder.Compare(_folder.FullName, [Tickets]));
    }
}
