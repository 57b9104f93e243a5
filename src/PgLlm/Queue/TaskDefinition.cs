using System.Text.Json;
using PgLlm.Migrations;
using PgLlm.Templates;

namespace PgLlm.Queue;

/// <summary>A task as the registry (<c>llm.task</c>, written by migrations) describes it.</summary>
public sealed class TaskDefinition
{
    internal TaskDefinition(
        string name,
        PromptTemplate prompt,
        string? systemPrompt,
        JsonElement jsonSchema,
        string? model,
        int maxAttempts,
        IReadOnlyList<string> targetColumns,
        string inputsFunction,
        string completeFunction,
        double? temperature = null,
        int? maxOutputTokens = null,
        IReadOnlyList<string>? imageColumns = null)
    {
        Temperature = temperature;
        MaxOutputTokens = maxOutputTokens;
        ImageColumns = imageColumns ?? [];
        Name = name;
        Prompt = prompt;
        SystemPrompt = systemPrompt;
        JsonSchema = jsonSchema;
        Model = model;
        MaxAttempts = maxAttempts;
        TargetColumns = targetColumns;
        InputsFunction = inputsFunction;
        CompleteFunction = completeFunction;
    }

    /// <summary>The task's name, e.g. <c>public.user_reviews:sentiment</c>.</summary>
    public string Name { get; }

    /// <summary>The prompt, with placeholders naming columns.</summary>
    public PromptTemplate Prompt { get; }

    /// <summary>The optional system message.</summary>
    public string? SystemPrompt { get; }

    /// <summary>The JSON schema the answer must match.</summary>
    public JsonElement JsonSchema { get; }

    /// <summary>The model to ask, or null for the worker's default.</summary>
    public string? Model { get; }

    /// <summary>Attempts before a job fails for good.</summary>
    public int MaxAttempts { get; }

    /// <summary>The sampling temperature, or null for the endpoint's default.</summary>
    public double? Temperature { get; }

    /// <summary>The most tokens the answer may use, or null for the endpoint's default.</summary>
    public int? MaxOutputTokens { get; }

    /// <summary>Read columns sent as image content parts rather than text.</summary>
    public IReadOnlyList<string> ImageColumns { get; }

    /// <summary>The columns the answer fills (the keys of the answer object).</summary>
    public IReadOnlyList<string> TargetColumns { get; }

    /// <summary>
    /// The tasks of the same table whose targets this one reads, directly or through other tasks (<c>llm.task.after</c>):
    /// a job of this task waits, unspent, while one of theirs for the same row is pending or running. Empty for most tasks.
    /// </summary>
    public IReadOnlyList<string> After { get; internal init; } = [];

    /// <summary>
    /// What the task expects of its table (its key, the columns it reads, its targets and the kind of answer
    /// each receives), as the registry records it: what the worker checks before the task's model calls.
    /// Null when built without the registry's table columns.
    /// </summary>
    internal PgLlmTableShape? Table { get; init; }

    /// <summary>The generated function reading a batch of jobs' inputs, as a quoted SQL name from the registry.</summary>
    internal string InputsFunction { get; }

    /// <summary>
    /// The generated function writing a batch of jobs' answers back (one answer is a batch of one), as a
    /// quoted SQL name from the registry.
    /// </summary>
    internal string CompleteFunction { get; }

    /// <summary>
    /// Whether <see cref="CompleteFunction"/> takes the answers' models and cache hits (its last two arrays):
    /// false for a write-back generated before queue step 4, until its table's script is applied again.
    /// </summary>
    internal bool WriteBackTakesRecord { get; init; } = true;
}
