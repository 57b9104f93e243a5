using System.Buffers;
using System.Text.Json;

namespace PgLlm.Local;

/// <summary>
/// Writes JSONL to a file one JSON line at a time, reusing one buffer and one <see cref="Utf8JsonWriter"/>
/// (no per-line buffers). The file is created on construction.
/// </summary>
internal sealed class LocalBatchLineWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private readonly Utf8JsonWriter _writer;

    public LocalBatchLineWriter(string path)
    {
        Path = path;
        _stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read | FileShare.Delete, bufferSize: 1 << 16);
        _writer = new Utf8JsonWriter(_buffer);
    }

    /// <summary>The file written.</summary>
    public string Path { get; }

    /// <summary>The writer of the current line (valid between <see cref="BeginLine"/> and <see cref="EndLine"/>).</summary>
    public Utf8JsonWriter Writer => _writer;

    /// <summary>Lines written so far.</summary>
    public int Lines { get; private set; }

    /// <summary>The writer for the next line; call <see cref="EndLine"/> once the line's value is written.</summary>
    public Utf8JsonWriter BeginLine()
    {
        _buffer.ResetWrittenCount();
        _writer.Reset(_buffer);
        return _writer;
    }

    /// <summary>Appends the line written since <see cref="BeginLine"/> and a newline to the file.</summary>
    public void EndLine()
    {
        _writer.Flush();
        _stream.Write(_buffer.WrittenSpan);
        _stream.WriteByte((byte)'\n');
        Lines++;
    }

    public void Dispose()
    {
        _writer.Dispose();
        _stream.Dispose();
    }
}
