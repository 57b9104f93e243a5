using System.Text.Json;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Queue;
using PgLlm.Templates;

namespace PgLlm.Tests.Runtime;

public sealed class AnswerValidationTests
{
    private static readonly TaskDefinition Task = new(
        "public.t:a+b",
        PromptTemplate.Parse("{x}"),
        null,
        JsonDocument.Parse("{}").RootElement,
        null,
        3,
        ["a", "b"],
        "llm.\"in\"",
        "llm.\"out\"");

    [Fact]
    public void Only_the_target_columns_are_kept()
    {
        var json = ModelCaller.Validate(Task, """{"b": 2, "a": "one", "id": 7, "other": "x"}""");

        Assert.Equal("""{"a":"one","b":2}""", json);
    }

    [Fact]
    public void Null_values_are_kept_as_null()
    {
        Assert.Equal("""{"a":null,"b":null}""", ModelCaller.Validate(Task, """{"a": null, "b": null}"""));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("   ", "empty")]
    [InlineData("{\"a\": ", "not valid JSON")]
    [InlineData("\"text\"", "not a JSON object")]
    [InlineData("{\"a\": 1}", "has no \"b\"")]
    public void Answers_that_do_not_fit_the_task_are_rejected_with_a_reason(string answer, string reason)
    {
        var error = Assert.Throws<InvalidAnswerException>(() => ModelCaller.Validate(Task, answer));

        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
    }
}
