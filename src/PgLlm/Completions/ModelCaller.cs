using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.Extensions.AI;
using PgLlm.Failures;
using PgLlm.Queue;

namespace PgLlm.Completions;

/// <summary>Asks the model for one job's answer through <see cref="IChatClient"/> and validates it.</summary>
internal sealed class ModelCaller
{
    private readonly IChatClient _chatClient;
    private readonly string? _defaultModel;
    private readonly ConditionalWeakTable<TaskDefinition, ChatOptions> _options = new();
    private readonly ConditionalWeakTable<TaskDefinition, ChatOptions>.CreateValueCallback _buildOptions;

    private readonly int _maxPromptBytes;

    public ModelCaller(IChatClient chatClient, string? defaultModel, int maxPromptBytes)
    {
        _chatClient = chatClient;
        _defaultModel = defaultModel;
        _maxPromptBytes = maxPromptBytes;
        _buildOptions = BuildOptions;
    }

    public async Task<ModelAnswer> AskAsync(TaskDefinition task, JsonElement inputs, CancellationToken cancellationToken)
    {
        var (messages, options) = RequestOf(task, inputs);
        var response = await _chatClient.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        return AnswerOf(task, response, options.ModelId);
    }

    /// <summary>
    /// One job's request: the system prompt, then the prompt with the row's values (as data, images as image parts),
    /// and the task's options. The batch tier writes the same request into its lines.
    /// </summary>
    /// <exception cref="PromptTooLargeException">The prompt exceeds the worker's limit.</exception>
    public (List<ChatMessage> Messages, ChatOptions Options) RequestOf(TaskDefinition task, JsonElement inputs)
    {
        var messages = new List<ChatMessage>(2);
        if (task.SystemPrompt is not null)
        {
            messages.Add(new ChatMessage(ChatRole.System, task.SystemPrompt));
        }

        messages.Add(new ChatMessage(ChatRole.User, PromptContent.Build(task, inputs, _maxPromptBytes)));
        return (messages, _options.GetValue(task, _buildOptions));
    }

    /// <summary>
    /// A chat completion read as a job's answer, whether a call's or a batch line's: its text validated against the
    /// task's schema, with its usage. The answer is not written when it is invalid, but the call was made (and may be
    /// billed): its usage travels on the <see cref="InvalidAnswerException"/>, so its tokens count in the job's.
    /// </summary>
    public static ModelAnswer AnswerOf(TaskDefinition task, ChatResponse response, string? requestedModel)
    {
        var usage = new ModelUsage(
            ToInt(response.Usage?.InputTokenCount),
            ToInt(response.Usage?.OutputTokenCount),
            response.ModelId ?? requestedModel,
            AnswerCacheChatClient.IsCacheHit(response));
        try
        {
            return new ModelAnswer(Validate(task, response.Text), usage.InputTokens, usage.OutputTokens, usage.Model, usage.CacheHit);
        }
        catch (InvalidAnswerException ex)
        {
            ex.Usage = usage;
            throw;
        }
    }

    /// <summary>
    /// The rate limiter of an endpoint's calls (null: the default endpoint), when the model access has one
    /// (every client <see cref="ChatClientFactory"/> builds does).
    /// </summary>
    public RateLimitingChatClient? RateLimiterOf(string? endpoint) =>
        _chatClient.GetService(typeof(RateLimitingChatClient), endpoint) as RateLimitingChatClient;

    /// <summary>
    /// A task's request options, built once per task definition (the registry makes a new definition
    /// when a migration changes the task) and shared by its concurrent calls: building the JSON-schema
    /// response format per call was a measurable share of the worker's CPU per job. Middleware that
    /// needs other options clones them (see <see cref="EndpointRouterChatClient"/>); none mutates them.
    /// </summary>
    private ChatOptions BuildOptions(TaskDefinition task) => new()
    {
        ModelId = task.Model ?? _defaultModel,
        Temperature = task.Temperature is { } temperature ? (float)temperature : null,
        MaxOutputTokens = task.MaxOutputTokens,
        ResponseFormat = ChatResponseFormat.ForJsonSchema(task.JsonSchema, "result"),
        AdditionalProperties = new AdditionalPropertiesDictionary { ["strict"] = true },
    };

    /// <summary>Keeps only the target columns, requires every one of them, and checks and converts each against the schema.</summary>
    internal static string Validate(TaskDefinition task, string? text) => AnswerValidator.Validate(task, text);

    private static int? ToInt(long? value) => value is null ? null : (int)Math.Min(value.Value, int.MaxValue);
}
