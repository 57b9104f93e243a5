using System.Text.Json;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Queue;
using PgLlm.Templates;

namespace PgLlm.Tests.Runtime;

/// <summary>Answers are checked against the schema the generator derived from the C# types, and converted exactly.</summary>
public sealed class TypedAnswerTests
{
    private const string Schema = """
        {"type":"object","properties":{
          "stars":{"type":"integer","minimum":1,"maximum":5},
          "total":{"type":["number","null"]},
          "refund":{"type":"boolean"},
          "mood":{"type":["string","null"],"enum":["positive","negative","neutral",null]},
          "paid_on":{"type":["string","null"],"format":"date"},
          "written_at":{"type":"string","format":"date-time"},
          "tags":{"type":["array","null"],"items":{"type":"string"}},
          "codes":{"type":"array","items":{"type":"integer"}},
          "origin":{"type":["object","null"],"properties":{"City":{"type":"string"},"Zip":{"type":["integer","null"]}},"required":["City","Zip"],"additionalProperties":false}
        },"additionalProperties":false}
        """;

    private static readonly string[] Columns = ["stars", "total", "refund", "mood", "paid_on", "written_at", "tags", "codes", "origin"];

    private static readonly TaskDefinition Task = new(
        "public.t:typed",
        PromptTemplate.Parse("{x}"),
        null,
        JsonDocument.Parse(Schema).RootElement.Clone(),
        null,
        3,
        Columns,
        "llm.\"in\"",
        "llm.\"out\"");

    private static readonly Dictionary<string, string> Good = new()
    {
        ["stars"] = "4",
        ["total"] = "12.50",
        ["refund"] = "false",
        ["mood"] = "\"positive\"",
        ["paid_on"] = "\"2024-05-01\"",
        ["written_at"] = "\"2024-05-01T10:30:00+02:00\"",
        ["tags"] = "[\"a\", \"b\"]",
        ["codes"] = "[1, 2]",
        ["origin"] = "{\"City\": \"Lyon\", \"Zip\": null}",
    };

    [Fact]
    public void A_well_typed_answer_passes_and_keeps_exact_numbers()
    {
        var json = ModelCaller.Validate(Task, Answer());

        Assert.Equal(
            """{"stars":4,"total":12.50,"refund":false,"mood":"positive","paid_on":"2024-05-01","written_at":"2024-05-01T10:30:00+02:00","tags":["a","b"],"codes":[1,2],"origin":{"City":"Lyon","Zip":null}}""",
            json);
    }

    [Theory]
    [InlineData("stars", "4.0", "4")]
    [InlineData("stars", "4e0", "4")]
    [InlineData("mood", "\"Positive\"", "\"positive\"")]
    [InlineData("mood", "null", "null")]
    [InlineData("total", "null", "null")]
    [InlineData("tags", "null", "null")]
    [InlineData("written_at", "\"2024-05-01T10:30:00Z\"", "\"2024-05-01T10:30:00Z\"")]
    public void Values_are_converted_exactly(string column, string value, string expected)
    {
        var json = JsonDocument.Parse(ModelCaller.Validate(Task, Answer((column, value)))).RootElement;

        Assert.Equal(expected, json.GetProperty(column).GetRawText());
    }

    [Theory]
    [InlineData("stars", "\"four\"", "expected integer for \"stars\", got \"four\"")]
    [InlineData("stars", "4.5", "expected integer for \"stars\", got 4.5")]
    [InlineData("stars", "\"4\"", "expected integer for \"stars\", got \"4\"")]
    [InlineData("stars", "null", "\"stars\" is null, and the task does not allow null (AllowNull)")]
    [InlineData("stars", "1e30", "expected integer for \"stars\", got 1e30")]
    [InlineData("stars", "9", "expected integer from 1 to 5 for \"stars\", got 9")]
    [InlineData("stars", "0.0", "expected integer from 1 to 5 for \"stars\", got 0")]
    [InlineData("total", "\"12,50 EUR\"", "expected number for \"total\", got \"12,50 EUR\"")]
    [InlineData("refund", "\"no\"", "expected boolean for \"refund\", got \"no\"")]
    [InlineData("mood", "\"great\"", "expected one of \"positive\", \"negative\", \"neutral\" for \"mood\", got \"great\"")]
    [InlineData("paid_on", "\"May 1st\"", "expected a date (yyyy-mm-dd) for \"paid_on\", got \"May 1st\"")]
    [InlineData("paid_on", "\"2024-02-30\"", "expected a date (yyyy-mm-dd) for \"paid_on\"")]
    [InlineData("written_at", "\"2024-05-01T10:30:00\"", "expected a date-time with an offset")]
    [InlineData("tags", "\"a, b\"", "expected array for \"tags\", got \"a, b\"")]
    [InlineData("codes", "[1, \"two\"]", "expected integer for \"codes[1]\", got \"two\"")]
    [InlineData("origin", "{\"City\": 7, \"Zip\": null}", "expected string for \"origin.City\", got 7")]
    [InlineData("origin", "{\"City\": \"Lyon\"}", "expected \"Zip\" in \"origin\"")]
    [InlineData("origin", "[]", "expected object for \"origin\", got an array []")]
    public void A_mismatch_names_the_field_and_the_value(string column, string value, string message)
    {
        var error = Assert.Throws<InvalidAnswerException>(() => ModelCaller.Validate(Task, Answer((column, value))));

        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    private static string Answer(params (string Column, string Value)[] overrides)
    {
        var values = new Dictionary<string, string>(Good);
        foreach (var (column, value) in overrides)
        {
            values[column] = value;
        }

        return "{" + string.Join(", ", values.Select(p => $"\"{p.Key}\": {p.Value}")) + "}";
    }
}
