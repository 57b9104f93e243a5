using System.Net;
using PgLlm.Completions;
using PgLlm.Failures;

namespace PgLlm.Tests.Governor;

/// <summary>What a failed call says about its endpoint: stop (auth, quota), outage (breaker), or nothing (the job's own failure).</summary>
public sealed class EndpointFaultTests
{
    private const string QuotaBody = """{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}""";
    private const string RateBody = """{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}""";

    [Theory]
    [InlineData(401, null, "Unauthorized")]
    [InlineData(403, null, "Unauthorized")]
    [InlineData(429, QuotaBody, "Quota")]
    [InlineData(429, RateBody, "None")]
    [InlineData(408, null, "Outage")]
    [InlineData(502, null, "Outage")]
    [InlineData(503, null, "Outage")]
    [InlineData(504, null, "Outage")]
    [InlineData(500, null, "None")]
    [InlineData(400, null, "None")]
    [InlineData(404, null, "None")]
    public void Statuses_are_classified_for_the_endpoint(int status, string? body, string expected) =>
        Assert.Equal(expected, FailureClassifier.EndpointFaultOf(new ModelEndpointException(status, "detail", responseBody: body)).ToString());

    [Fact]
    public async Task The_client_reads_the_error_code_of_an_out_of_quota_429()
    {
        await using var server = await PgLlm.Local.LocalModelServer.StartAsync();
        server.Responder = _ => PgLlm.Local.ModelReply.Raw(429, QuotaBody);
        using var client = new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, "m");

        var error = await Assert.ThrowsAsync<ModelEndpointException>(() => client.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, "x")]));

        Assert.Equal("insufficient_quota", error.ErrorCode);
        Assert.Equal(EndpointFault.Quota, FailureClassifier.EndpointFaultOf(error));
        Assert.Equal("quota exceeded: HTTP 429: You exceeded your current quota, please check your plan and billing details.", FailureClassifier.EndpointReason(EndpointFault.Quota, error));
    }

    [Fact]
    public void Transport_failures_and_timeouts_are_outages_and_a_bad_answer_is_the_jobs_own()
    {
        Assert.Equal(EndpointFault.Outage, FailureClassifier.EndpointFaultOf(new HttpRequestException("Connection refused (127.0.0.1:1)")));
        Assert.Equal(EndpointFault.Outage, FailureClassifier.EndpointFaultOf(new TimeoutException("the model did not answer within 5 s")));
        Assert.Equal(EndpointFault.Unauthorized, FailureClassifier.EndpointFaultOf(new HttpRequestException("no", null, HttpStatusCode.Unauthorized)));
        Assert.Equal(EndpointFault.None, FailureClassifier.EndpointFaultOf(new InvalidAnswerException("not JSON")));
    }

    [Fact]
    public void The_reason_quotes_the_provider_and_a_quota_429_is_not_resent_by_the_rate_limiter()
    {
        var quota = new ModelEndpointException(429, "You exceeded your current quota.", TimeSpan.FromSeconds(1), QuotaBody);
        Assert.Equal("quota exceeded: HTTP 429: You exceeded your current quota.", FailureClassifier.EndpointReason(EndpointFault.Quota, quota));
        Assert.False(RateLimitingChatClient.IsThrottled(quota, out _));
        Assert.True(RateLimitingChatClient.IsThrottled(new ModelEndpointException(429, "slow down", TimeSpan.FromSeconds(1), RateBody), out _));
        Assert.Equal(
            "unauthorized: HTTP 401: Incorrect API key provided.",
            FailureClassifier.EndpointReason(EndpointFault.Unauthorized, new ModelEndpointException(401, "Incorrect API key provided.")));
    }
}
