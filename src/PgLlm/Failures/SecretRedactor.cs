using System.Text.RegularExpressions;

namespace PgLlm.Failures;

/// <summary>
/// Removes secrets from text bound for the queue (<c>llm.job.errors</c>, <c>last_error</c>) or the logs: the configured
/// API key wherever it appears (an endpoint may echo it in an error), and anything shaped like a bearer token or an
/// OpenAI-style key.
/// </summary>
internal sealed partial class SecretRedactor
{
    /// <summary>What a secret is replaced with.</summary>
    public const string Mask = "[redacted]";

    // Shorter keys are not searched for verbatim: masking every occurrence of a few common characters would make
    // error messages unreadable. Such keys are no secret worth the name; the patterns below still apply.
    private const int MinimumLength = 8;

    private readonly string[] _secrets;

    public SecretRedactor(params string?[] secrets) =>
        _secrets = secrets
            .Where(s => s is { Length: >= MinimumLength })
            .Select(s => s!)
            .Distinct(StringComparer.Ordinal)
            .OrderByDescending(s => s.Length)
            .ToArray();

    /// <summary>The text with every known secret and token-shaped word replaced by <see cref="Mask"/>.</summary>
    public string Redact(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        foreach (var secret in _secrets)
        {
            text = text.Replace(secret, Mask, StringComparison.Ordinal);
        }

        text = BearerToken().Replace(text, "${scheme}" + Mask);
        return KeyShaped().Replace(text, Mask);
    }

    // A token68 (RFC 9110) of 8 characters or more: "the bearer of bad news" keeps its words.
    [GeneratedRegex(@"(?<scheme>\bBearer\s+)[A-Za-z0-9\-._~+/]{8,}=*", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex BearerToken();

    [GeneratedRegex(@"\bsk-[A-Za-z0-9_\-]{16,}", RegexOptions.CultureInvariant)]
    private static partial Regex KeyShaped();
}
