using System.Collections.Concurrent;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>A stored file of the Files API: metadata in memory, content in the store's directory.</summary>
/// <param name="Id">The <c>file-…</c> id.</param>
/// <param name="Filename">The file name given at upload (or chosen by the server for batch output).</param>
/// <param name="Purpose"><c>batch</c> for uploads, <c>batch_output</c> for output and error files.</param>
/// <param name="Bytes">Size in bytes.</param>
/// <param name="CreatedAt">Unix seconds.</param>
/// <param name="Path">Where the content is on disk.</param>
/// <param name="Sequence">Creation order within the store.</param>
internal sealed record LocalFile(string Id, string Filename, string Purpose, long Bytes, long CreatedAt, string Path, long Sequence)
{
    /// <summary>Writes the OpenAI file object.</summary>
    public void WriteJson(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        writer.WriteString("id", Id);
        writer.WriteString("object", "file");
        writer.WriteNumber("bytes", Bytes);
        writer.WriteNumber("created_at", CreatedAt);
        writer.WriteNull("expires_at");
        writer.WriteString("filename", Filename);
        writer.WriteString("purpose", Purpose);
        writer.WriteString("status", "processed");
        writer.WriteNull("status_details");
        writer.WriteEndObject();
    }
}

/// <summary>
/// The Files API's storage: a temporary directory owned by one server (removed on dispose) and a thread-safe
/// index of the files in it. Content is written and read as streams, never held in memory.
/// </summary>
internal sealed class LocalFileStore : IDisposable
{
    private readonly ConcurrentDictionary<string, LocalFile> _files = new(StringComparer.Ordinal);
    private long _sequence;

    public LocalFileStore()
    {
        Root = Path.Combine(Path.GetTempPath(), "pgllm-local-files-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Root);
    }

    /// <summary>The directory holding the content.</summary>
    public string Root { get; }

    /// <summary>A new unique <c>file-…</c> id.</summary>
    public static string NewId() => "file-" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>Where the content of file <paramref name="id"/> is (or will be) stored.</summary>
    public string PathFor(string id) => Path.Combine(Root, id);

    /// <summary>Registers the content already written at <see cref="PathFor"/>.</summary>
    public LocalFile Add(string id, string filename, string purpose)
    {
        var path = PathFor(id);
        var file = new LocalFile(
            id,
            filename,
            purpose,
            new FileInfo(path).Length,
            DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            path,
            Interlocked.Increment(ref _sequence));
        _files[id] = file;
        return file;
    }

    public bool TryGet(string id, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out LocalFile? file)
        => _files.TryGetValue(id, out file);

    /// <summary>The files, newest first, optionally only those of one purpose.</summary>
    public IReadOnlyList<LocalFile> List(string? purpose)
        => _files.Values
            .Where(f => purpose is null || string.Equals(f.Purpose, purpose, StringComparison.Ordinal))
            .OrderByDescending(f => f.Sequence)
            .ToList();

    /// <summary>Removes the file and its content; false when there is no such file.</summary>
    public bool Delete(string id)
    {
        if (!_files.TryRemove(id, out var file))
        {
            return false;
        }

        TryDeletePath(file.Path);
        return true;
    }

    /// <summary>Deletes a content path that was never registered (an aborted upload, an empty output file).</summary>
    public static void TryDeletePath(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: the directory goes on dispose.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }

    public void Dispose()
    {
        _files.Clear();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Best effort (a reader may still hold a file open on some platforms).
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }
}
