using System.Globalization;
using System.Text;

namespace PgLlm.Failures;

/// <summary>
/// A job's rendered prompt exceeds <see cref="PgLlmWorkerOptions.MaxPromptBytes"/>. The model is not called and the
/// job fails at once (retrying cannot shrink the row's values); a later update of the row enqueues a new job.
/// </summary>
internal sealed class PromptTooLargeException(string message) : Exception(message)
{
    /// <summary>Throws when <paramref name="prompt"/> is more than <paramref name="maxBytes"/> UTF-8 bytes.</summary>
    public static void ThrowIfOver(string prompt, int maxBytes) => ThrowIfOver([prompt], maxBytes);

    /// <summary>Throws when the concatenation of <paramref name="pieces"/> is more than <paramref name="maxBytes"/> UTF-8 bytes.</summary>
    public static void ThrowIfOver(IReadOnlyCollection<string> pieces, int maxBytes)
    {
        // Cheap exit: a UTF-8 character is at most 3 bytes per UTF-16 unit.
        long length = 0;
        foreach (var piece in pieces)
        {
            length += piece.Length;
        }

        if (length * 3 <= maxBytes)
        {
            return;
        }

        long bytes = 0;
        foreach (var piece in pieces)
        {
            bytes += Encoding.UTF8.GetByteCount(piece);
        }

        if (bytes > maxBytes)
        {
            throw new PromptTooLargeException(string.Create(
                CultureInfo.InvariantCulture,
                $"prompt too large: {bytes} bytes, more than PgLlm:Worker:MaxPromptBytes ({maxBytes}); the model was not called"));
        }
    }
}
