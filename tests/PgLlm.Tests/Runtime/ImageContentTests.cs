using System.Text.Json;
using Microsoft.Extensions.AI;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Queue;
using PgLlm.Templates;

namespace PgLlm.Tests.Runtime;

/// <summary>Image placeholders become image content parts at their position; other values stay text, inserted once.</summary>
public sealed class ImageContentTests
{
    private static readonly byte[] Png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];

    private static TaskDefinition Task(string template, params string[] images) => new(
        "public.t:x",
        PromptTemplate.Parse(template),
        null,
        JsonDocument.Parse("{}").RootElement,
        null,
        3,
        ["x"],
        "llm.\"in\"",
        "llm.\"out\"",
        imageColumns: images);

    private static JsonElement Values(string json) => JsonDocument.Parse(json).RootElement.Clone();

    [Fact]
    public void A_url_goes_as_an_image_part_between_the_text_around_it()
    {
        var contents = PromptContent.Build(
            Task("Extract all text from this image: {url} Answer in {lang}.", "url"),
            Values("""{"url": "https://example.com/r/receipt 1.png", "lang": "English {url}"}"""));

        Assert.Collection(
            contents,
            c => Assert.Equal("Extract all text from this image: ", Assert.IsType<TextContent>(c).Text),
            c =>
            {
                var image = Assert.IsType<UriContent>(c);
                Assert.Equal("https://example.com/r/receipt%201.png", image.Uri.AbsoluteUri);
                Assert.True(image.HasTopLevelMediaType("image"));
            },
            // Values are data: a value that looks like a placeholder is not expanded again.
            c => Assert.Equal(" Answer in English {url}.", Assert.IsType<TextContent>(c).Text));
    }

    [Fact]
    public void Bytea_goes_as_data_with_the_media_type_of_its_signature()
    {
        var hex = "\\\\x" + Convert.ToHexString(Png).ToLowerInvariant();
        var contents = PromptContent.Build(Task("Read {scan}", "scan"), Values($$"""{"scan": "{{hex}}"}"""));

        var image = Assert.IsType<DataContent>(contents[1]);
        Assert.Equal("image/png", image.MediaType);
        Assert.Equal(Png, image.Data.ToArray());
    }

    [Fact]
    public void A_data_url_goes_as_data()
    {
        var url = "data:image/jpeg;base64," + Convert.ToBase64String([0xFF, 0xD8, 0xFF, 0xE0]);
        var contents = PromptContent.Build(Task("{img}", "img"), Values($$"""{"img": "{{url}}"}"""));

        var image = Assert.IsType<DataContent>(Assert.Single(contents));
        Assert.Equal("image/jpeg", image.MediaType);
    }

    [Theory]
    [InlineData("\"not a url\"", "holds neither an http(s) URL, a data URL nor bytea")]
    [InlineData("\"ftp://example.com/a.png\"", "holds neither")]
    [InlineData("\"\\\\x00010203\"", "are not a PNG, JPEG, GIF or WebP image")]
    [InlineData("\"\\\\xzz\"", "malformed bytea")]
    [InlineData("\"data:text/plain;base64,aGk=\"", "not an image")]
    public void A_value_that_is_no_image_is_a_clear_input_error(string value, string message)
    {
        var error = Assert.Throws<InvalidInputException>(() => PromptContent.Build(Task("Read {img}", "img"), Values($$"""{"img": {{value}}}""")));

        Assert.Contains("image column \"img\"", error.Message, StringComparison.Ordinal);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_images_the_prompt_is_one_text_part()
    {
        var contents = PromptContent.Build(Task("Sentiment of: {x}"), Values("""{"x": "I {love} it"}"""));

        Assert.Equal("Sentiment of: I {love} it", Assert.IsType<TextContent>(Assert.Single(contents)).Text);
    }
}
