using PgLlm.Failures;

namespace PgLlm.Tests.Security;

/// <summary>The pieces behind the secret and size rules, on their own.</summary>
public sealed class RedactionAndLimitTests
{
    [Theory]
    [InlineData("Incorrect API key provided: my-secret-key-123.", "Incorrect API key provided: [redacted].")]
    [InlineData("my-secret-key-123my-secret-key-123", "[redacted][redacted]")]
    [InlineData("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [redacted]")]
    [InlineData("header 'bearer Xyz12345==', next", "header 'bearer [redacted]', next")]
    [InlineData("key sk-proj-ABCdef0123456789_xyz was revoked", "key [redacted] was revoked")]
    [InlineData("nothing secret: HTTP 500, sk-short", "nothing secret: HTTP 500, sk-short")]
    [InlineData("the bearer of bad news", "the bearer of bad news")]
    public void The_configured_key_and_token_shaped_words_are_masked(string text, string expected) =>
        Assert.Equal(expected, new SecretRedactor("my-secret-key-123").Redact(text));

    [Fact]
    public void A_short_key_is_not_searched_for_verbatim()
    {
        Assert.Equal("a bc abc", new SecretRedactor("abc", null, string.Empty).Redact("a bc abc"));
    }

    [Theory]
    [InlineData(10, 10, false)]
    [InlineData(11, 10, true)]
    public void The_prompt_limit_counts_ascii_bytes(int length, int limit, bool throws) =>
        Assert.Equal(throws, Throws(new string('a', length), limit));

    [Fact]
    public void The_prompt_limit_counts_utf8_bytes_not_characters()
    {
        // "é" is two bytes, "日" three, "😀" four (two UTF-16 units).
        Assert.False(Throws("éé日😀", 11));
        Assert.True(Throws("éé日😀", 10));
        var error = Assert.Throws<PromptTooLargeException>(() => PromptTooLargeException.ThrowIfOver("日日", 5));
        Assert.Equal("prompt too large: 6 bytes, more than PgLlm:Worker:MaxPromptBytes (5); the model was not called", error.Message);
    }

    private static bool Throws(string prompt, int limit)
    {
        try
        {
            PromptTooLargeException.ThrowIfOver(prompt, limit);
            return false;
        }
        catch (PromptTooLargeException)
        {
            return true;
        }
    }
}
