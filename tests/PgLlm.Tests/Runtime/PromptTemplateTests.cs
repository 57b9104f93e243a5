using System.Text.Json;
using PgLlm.Templates;

namespace PgLlm.Tests.Runtime;

public sealed class PromptTemplateTests
{
    [Fact]
    public void Values_are_inserted_once_and_never_expanded_again()
    {
        // The reference replaced placeholders one after another, so a value '{b}' in column a
        // reached the model as the value of b. Here it stays the text '{b}'.
        var template = PromptTemplate.Parse("a={a} b={b}");

        var rendered = template.Render(Json("""{"a": "{b}", "b": "SECRET"}"""));

        Assert.Equal("a={b} b=SECRET", rendered);
    }

    [Fact]
    public void Doubled_braces_are_literal()
    {
        var template = PromptTemplate.Parse("Return {{\"x\": 1}} for {name}");

        Assert.Equal(["name"], template.Placeholders);
        Assert.Equal("Return {\"x\": 1} for Ada", template.Render(Json("""{"name": "Ada"}""")));
    }

    [Fact]
    public void Nulls_render_empty_and_other_json_values_render_as_written()
    {
        var template = PromptTemplate.Parse("[{n}] [{i}] [{f}] [{b}] [{missing}]");

        Assert.Equal("[] [42] [1.5] [true] []", template.Render(Json("""{"n": null, "i": 42, "f": 1.5, "b": true}""")));
    }

    [Theory]
    [InlineData("open {brace")]
    [InlineData("close brace}")]
    [InlineData("empty {}")]
    [InlineData("nested {a{b}}")]
    public void Malformed_templates_are_rejected_with_the_offset(string text)
    {
        var error = Assert.Throws<FormatException>(() => PromptTemplate.Parse(text));

        Assert.Contains("offset", error.Message, StringComparison.Ordinal);
    }

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();
}
