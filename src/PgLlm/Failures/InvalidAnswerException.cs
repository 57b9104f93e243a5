using PgLlm.Completions;

namespace PgLlm.Failures;

/// <summary>The model answered, but not with what the task's schema asks for. Nothing is written.</summary>
internal sealed class InvalidAnswerException(string message) : Exception(message)
{
    /// <summary>What the call that gave the answer cost (its tokens count in the job's), when known.</summary>
    public ModelUsage? Usage { get; set; }
}
