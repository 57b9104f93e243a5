using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using PgLlm.Queue;

namespace PgLlm.Completions;

/// <summary>A validated answer: a JSON object holding exactly the task's target columns.</summary>
internal sealed record ModelAnswer(string Json, int? InputTokens, int? OutputTokens);

/// <summary>The model answered, but not with what the task's schema asks for. Nothing is written.</summary>
internal sealed class InvalidAnswerException(string message) : Exception(message);

/// <summary>Asks the model for one job's answer through <see cref="IChatClient"/> and validates it.</summary>
internal sealed class ModelCaller
{
    private readonly IChatClient _chatClient;
    private readonly string? _defaultModel;

    public ModelCaller(IChatClient chatClient, string? defaultModel)
    {
        _chatClient = chatClient;
        _defaultModel = defaultModel;
    }

    public async Task<ModelAnswer> AskAsync(TaskDefinition task, string prompt, CancellationToken cancellationToken)
    {
        var messages = new List<ChatMessage>(2);
        if (task.SystemPrompt is not null)
        {
            messages.Add(new ChatMessage(ChatRole.System, task.SystemPrompt));
        }

        messages.Add(new ChatMessage(ChatRole.User, prompt));
        var options = new ChatOptions
        {
            ModelId = task.Model ?? _defaultModel,
            ResponseFormat = ChatResponseFormat.ForJsonSchema(task.JsonSchema, "result"),
            AdditionalProperties = new AdditionalPropertiesDictionary { ["strict"] = true },
        };
        var response = await _chatClient.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        var json = Validate(task, response.Text);
        return new ModelAnswer(json, ToInt(response.Usage?.InputTokenCount), ToInt(response.Usage?.OutputTokenCount));
    }

    /// <summary>Keeps only the target columns, and requires every one of them.</summary>
    internal static string Validate(TaskDefinition task, string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new InvalidAnswerException("the model returned an empty answer");
        }

        JsonNode? node;
        try
        {
            node = JsonNode.Parse(text);
        }
        catch (JsonException ex)
        {
            throw new InvalidAnswerException($"the answer is not valid JSON ({ex.Message}): {Excerpt(text)}");
        }

        if (node is not JsonObject answer)
        {
            throw new InvalidAnswerException($"the answer is not a JSON object: {Excerpt(text)}");
        }

        var result = new JsonObject();
        foreach (var column in task.TargetColumns)
        {
            if (!answer.TryGetPropertyValue(column, out var value))
            {
                throw new InvalidAnswerException($"the answer has no \"{column}\": {Excerpt(text)}");
            }

            result[column] = value?.DeepClone();
        }

        return result.ToJsonString();
    }

    private static string Excerpt(string text) => text.Length <= 200 ? text : text[..200] + "...";

    private static int? ToInt(long? value) => value is null ? null : (int)Math.Min(value.Value, int.MaxValue);
}
