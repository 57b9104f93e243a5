using PgLlm.Local;
using PgLlm.Worker;

namespace PgLlm.Tests;

/// <summary>Settings pointing at a test's local model endpoint, with test-friendly timings.</summary>
internal static class TestOptions
{
    public static PgLlmOptions For(LocalModelServer model, int concurrency = 8) => new()
    {
        BaseUrl = model.BaseUrl.ToString(),
        ApiKey = model.ApiKey,
        Model = "test-model",
        Worker = new PgLlmWorkerOptions
        {
            Concurrency = concurrency,
            PollInterval = TimeSpan.FromMilliseconds(500),
            RetryBaseDelay = TimeSpan.FromMilliseconds(20),
            RetryMaxDelay = TimeSpan.FromMilliseconds(100),
            ModelTimeout = TimeSpan.FromSeconds(30),
            ShutdownGrace = TimeSpan.FromSeconds(5),
        },
    };
}
