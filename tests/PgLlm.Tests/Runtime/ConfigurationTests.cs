using Microsoft.Extensions.Configuration;
using PgLlm.Completions;
using PgLlm.Hosting;

namespace PgLlm.Tests.Runtime;

public sealed class ConfigurationTests
{
    [Fact]
    public void The_PgLlm_section_binds_and_PGLLM_variables_override_it()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["PgLlm:BaseUrl"] = "http://section.example/v1",
            ["PgLlm:Model"] = "section-model",
            ["PgLlm:Worker:Concurrency"] = "3",
            ["PGLLM_MODEL"] = "env-model",
            ["PGLLM_CONNECTION"] = "Host=db;Database=app",
            ["PGLLM_API_KEY"] = "sk-test",
        }).Build();
        var options = new PgLlmOptions();

        PgLlmServiceCollectionExtensions.Bind(configuration, options);

        Assert.Equal("http://section.example/v1", options.BaseUrl);
        Assert.Equal("env-model", options.Model);
        Assert.Equal("Host=db;Database=app", options.ConnectionString);
        Assert.Equal("sk-test", options.ApiKey);
        Assert.Equal(3, options.Worker.Concurrency);
    }

    [Theory]
    [InlineData(null, "base URL")]
    [InlineData("not a url", "base URL")]
    [InlineData("ftp://example.com/v1", "base URL")]
    public void A_bad_endpoint_gets_a_clear_error(string? baseUrl, string expected)
    {
        var error = Assert.Throws<InvalidOperationException>(() => ChatClientFactory.Create(new PgLlmOptions { BaseUrl = baseUrl, Model = "m" }));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains("PGLLM_BASE_URL", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_model_gets_a_clear_error()
    {
        var error = Assert.Throws<InvalidOperationException>(() => ChatClientFactory.Create(new PgLlmOptions { BaseUrl = "http://localhost/v1" }));

        Assert.Contains("PGLLM_MODEL", error.Message, StringComparison.Ordinal);
    }
}
