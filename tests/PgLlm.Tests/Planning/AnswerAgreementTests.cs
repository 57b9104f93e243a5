using System.Text.Json;
using PgLlm.Planning;

namespace PgLlm.Tests.Planning;

/// <summary>How <c>pgllm compare</c> decides that a new answer equals the old one.</summary>
public sealed class AnswerAgreementTests
{
    [Theory]
    [InlineData("number", "4.50", "4.5", 1)]
    [InlineData("integer", "3", "4", 0)]
    [InlineData("boolean", "true", "true", 1)]
    [InlineData("boolean", "true", "false", 0)]
    [InlineData("enum", "\"positive\"", "\"Positive\"", 0)]
    [InlineData("date-time", "\"2026-12-06T10:00:00+00:00\"", "\"2026-12-06T10:00:00Z\"", 1)]
    [InlineData("date-time", "\"2026-12-06T10:00:00+01:00\"", "\"2026-12-06T10:00:00Z\"", 0)]
    [InlineData("date", "\"2026-12-06\"", "\"2026-12-06\"", 1)]
    [InlineData("uuid", "\"6F9619FF-8B86-D011-B42D-00C04FC964FF\"", "\"6f9619ff-8b86-d011-b42d-00c04fc964ff\"", 1)]
    [InlineData("array:string", "[\"a\",\"b\"]", "[\"a\", \"b\"]", 1)]
    [InlineData("string", "null", "null", 1)]
    [InlineData("string", "\"x\"", "null", 0)]
    public void Exact_kinds_agree_only_on_the_same_value(string kind, string oldJson, string newJson, double expected)
    {
        using var oldValue = JsonDocument.Parse(oldJson);
        using var newValue = JsonDocument.Parse(newJson);

        Assert.Equal(expected, AnswerAgreement.Of(kind, oldValue.RootElement, newValue.RootElement));
    }

    [Fact]
    public void Text_agrees_by_normalized_Levenshtein_similarity_of_lower_cased_collapsed_text()
    {
        Assert.Equal(1, AnswerAgreement.TextSimilarity("Hello   World\n", "hello world"));
        Assert.Equal(1 - (1 / 3.0), AnswerAgreement.TextSimilarity("cat", "cut"), 6);
        Assert.Equal(0, AnswerAgreement.TextSimilarity("abc", "xyz"));
        Assert.Equal(1, AnswerAgreement.TextSimilarity(string.Empty, "  "));
        // Texts too long for edits: token Jaccard (3 shared words of 5).
        var longA = string.Join(' ', Enumerable.Repeat("alpha beta gamma delta", 600));
        var longB = string.Join(' ', Enumerable.Repeat("alpha beta gamma epsilon", 600));
        Assert.Equal(3 / 5.0, AnswerAgreement.TextSimilarity(longA, longB), 6);
    }
}
