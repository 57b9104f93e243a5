using PgLlm.Local;

namespace PgLlm.Tests.Integration;

/// <summary>Image columns reach the endpoint as image_url content parts, never pasted into the text.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class ImageInputTests
{
    private static readonly byte[] Png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52];

    private readonly PgLlmFixture _fixture;

    public ImageInputTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task A_url_column_is_sent_as_an_image_part_and_the_answer_is_written()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO scans (image_url) VALUES ('https://images.example.com/receipts/receipt-42.png')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var ocr = Assert.Single(_fixture.Model.Requests, r => r.UserText.StartsWith("Extract all text", StringComparison.Ordinal));
        var message = ocr.Messages.Single(m => m.Role == "user");
        Assert.Equal("Extract all text from this image: ", message.Text);
        Assert.Equal(["https://images.example.com/receipts/receipt-42.png"], message.ImageUrls);
        Assert.DoesNotContain("images.example.com", ocr.UserText, StringComparison.Ordinal);
        Assert.Equal("image_text: text in receipt-42.png", await db.ScalarAsync<string>("SELECT image_text FROM scans"));
    }

    [Fact]
    public async Task A_receipt_image_fills_numeric_total_and_taxes()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO scans (image_url) VALUES ('https://images.example.com/receipts/a.jpg'), ('https://images.example.com/receipts/b.jpg')");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var receipts = _fixture.Model.Requests.Where(r => r.UserText.StartsWith("Read the total", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, receipts.Count);
        foreach (var request in receipts)
        {
            var url = Assert.Single(request.Messages.Single(m => m.Role == "user").ImageUrls);
            var answer = System.Text.Json.JsonDocument.Parse(DeterministicModel.Answer(request)).RootElement;
            Assert.Equal(
                answer.GetProperty("total").GetDecimal() + "|" + answer.GetProperty("taxes").GetDecimal(),
                await db.ScalarAsync<string>("SELECT total || '|' || taxes FROM scans WHERE image_url = $1", url));
        }

        // Same text, different images: the images are part of what the model saw.
        Assert.Equal(2, await db.ScalarAsync<long>("SELECT count(DISTINCT total) FROM scans"));
    }

    [Fact]
    public async Task A_bytea_column_is_sent_as_a_data_url()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO scans (picture) VALUES ($1)", Png);

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        var request = Assert.Single(_fixture.Model.Requests);
        var image = Assert.Single(request.Messages.Single(m => m.Role == "user").ImageUrls);
        Assert.Equal("data:image/png;base64," + Convert.ToBase64String(Png), image);
        Assert.Equal("picture_text: text in image/png data", await db.ScalarAsync<string>("SELECT picture_text FROM scans"));
    }

    [Fact]
    public async Task A_value_that_is_no_image_fails_at_once_without_a_model_call()
    {
        await using var db = await _fixture.CreateDatabaseAsync();
        await db.ExecAsync("INSERT INTO scans (picture) VALUES ('\\x0001020304'::bytea)");

        await _fixture.CreateWorker(db).RunUntilIdleAsync();

        Assert.Equal(0, _fixture.Model.RequestCount);
        Assert.Equal(
            "failed|1|invalid input: image column \"picture\" holds 5 bytes that are not a PNG, JPEG, GIF or WebP image",
            await db.ScalarAsync<string>("SELECT state || '|' || attempt || '|' || last_error FROM llm.job"));
    }
}
