namespace PgLlm;

/// <summary>Options shared by <see cref="LlmColumnAttribute"/> and <see cref="LlmTaskAttribute"/>.</summary>
public abstract class LlmTaskBaseAttribute : Attribute
{
    /// <summary>Creates the attribute with its prompt.</summary>
    protected LlmTaskBaseAttribute(string prompt) => Prompt = prompt;

    /// <summary>
    /// The prompt. <c>{Name}</c> inserts the value of a property or column of the same row;
    /// <c>{{</c> and <c>}}</c> are literal braces. Values are inserted once and never expanded again.
    /// </summary>
    public string Prompt { get; }

    /// <summary>The task's name, unique on its table. Defaults to its target column(s).</summary>
    public string? Name { get; set; }

    /// <summary>An optional system message sent before the prompt, to separate instructions from row data.</summary>
    public string? SystemPrompt { get; set; }

    /// <summary>The model to ask; the worker's configured model when unset.</summary>
    public string? Model { get; set; }

    /// <summary>Attempts before the job is marked failed (default 5).</summary>
    public int MaxAttempts { get; set; } = 5;

    /// <summary>Sampling temperature, 0 to 2; unset (NaN) leaves the endpoint's default.</summary>
    public double Temperature { get; set; } = double.NaN;

    /// <summary>The most tokens the answer may use; 0 (unset) leaves the endpoint's default.</summary>
    public int MaxOutputTokens { get; set; }

    /// <summary>
    /// How the task's jobs reach the model: <see cref="LlmTier.Live"/> by default (the normal path, answered in
    /// seconds), or <see cref="LlmTier.Batch"/> (through the provider's Batch API, within its batch window at about
    /// half the price). The tier is not part of the task's definition: changing it does not make rows stale.
    /// </summary>
    public LlmTier Tier { get; set; }
}

/// <summary>One model call fills the column of the property this is on.</summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Parameter, AllowMultiple = false, Inherited = false)]
public sealed class LlmColumnAttribute : LlmTaskBaseAttribute
{
    /// <summary>Declares the task.</summary>
    /// <param name="prompt">The prompt, with <c>{Property}</c> or <c>{column}</c> placeholders.</param>
    public LlmColumnAttribute(string prompt)
        : base(prompt)
    {
    }

    /// <summary>
    /// Whether the model may answer <c>null</c> (and leave the column NULL). False by default: the answer's schema
    /// then requires a value even when the property's type is nullable (<c>string?</c>, <c>decimal?</c>, as a
    /// column filled later must be), and a <c>null</c> answer is an invalid answer, retried and then failed.
    /// </summary>
    public bool AllowNull { get; set; }

    /// <summary>
    /// When an answer may replace the column's value: <see cref="LlmOverwrite.IfUnedited"/> by default (a value
    /// someone other than PgLlm wrote with an <c>UPDATE</c> is kept), <see cref="LlmOverwrite.Never"/> (written
    /// only while NULL) or <see cref="LlmOverwrite.Always"/>.
    /// </summary>
    public LlmOverwrite Overwrite { get; set; }
}

/// <summary>One model call fills several columns: the answer is a JSON object keyed by the target columns.</summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct, AllowMultiple = true, Inherited = false)]
public sealed class LlmTaskAttribute : LlmTaskBaseAttribute
{
    /// <summary>Declares the task.</summary>
    /// <param name="prompt">The prompt, with <c>{Property}</c> or <c>{column}</c> placeholders.</param>
    /// <param name="targets">The properties (or columns) the answer fills; use <c>nameof</c>.</param>
    public LlmTaskAttribute(string prompt, params string[] targets)
        : base(prompt) => Targets = targets;

    /// <summary>The properties (or columns) the answer fills.</summary>
    public IReadOnlyList<string> Targets { get; }

    /// <summary>
    /// The targets the model may answer with <c>null</c> (leaving their columns NULL), e.g.
    /// <c>AllowNull = [nameof(Taxes)]</c>; each must be one of <see cref="Targets"/>. Empty by default: every
    /// target then requires a value even when its property's type is nullable (<c>string?</c>, <c>decimal?</c>,
    /// as a column filled later must be), and a <c>null</c> answer is an invalid answer, retried and then failed.
    /// </summary>
#pragma warning disable CA1819 // An attribute argument can only be an array.
    public string[] AllowNull { get; set; } = [];

    /// <summary>
    /// The targets an answer always replaces, an edit included (<see cref="LlmOverwrite.Always"/>), e.g.
    /// <c>OverwriteAlways = [nameof(Category)]</c>; each must be one of <see cref="Targets"/>. The other targets keep a
    /// value someone other than PgLlm wrote with an <c>UPDATE</c> (<see cref="LlmOverwrite.IfUnedited"/>) unless
    /// named in <see cref="OverwriteNever"/>.
    /// </summary>
    public string[] OverwriteAlways { get; set; } = [];

    /// <summary>
    /// The targets written only while NULL (<see cref="LlmOverwrite.Never"/>): a value, whoever wrote it, is never
    /// replaced; each must be one of <see cref="Targets"/>, and not in <see cref="OverwriteAlways"/>.
    /// </summary>
    public string[] OverwriteNever { get; set; } = [];
#pragma warning restore CA1819
}

/// <summary>
/// When PgLlm's write-back may replace a target cell's value. A cell is <em>edited</em> once anyone other than
/// PgLlm (an application, a person) changes it with an <c>UPDATE</c>; <c>llm.release_cell</c> forgets the edit.
/// </summary>
public enum LlmOverwrite
{
    /// <summary>The default: written unless the cell was edited; an edited cell keeps its value until released.</summary>
    IfUnedited = 0,

    /// <summary>Written only while the cell is NULL: a value, whoever wrote it, is never replaced.</summary>
    Never = 1,

    /// <summary>Always written: an answer replaces whatever the cell holds, an edit included.</summary>
    Always = 2,
}

/// <summary>How a task's jobs reach the model (<see cref="LlmTaskBaseAttribute.Tier"/>).</summary>
public enum LlmTier
{
    /// <summary>The default: the normal path; a job is answered as soon as a worker takes it.</summary>
    Live = 0,

    /// <summary>
    /// The task's jobs go through the provider's Batch API: answered within the batch window (up to 24 h) at about
    /// half the price. Live changes of a row still re-run it, in the batch tier.
    /// </summary>
    Batch = 1,
}
