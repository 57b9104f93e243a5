using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;
using PgLlm.Completions;
using PgLlm.Hosting;
using PgLlm.Local;
using PgLlm.Observability;

namespace PgLlm.Tests.Completions;

/// <summary>The default model access as a ChatClientBuilder pipeline, and the worker's telemetry entry point, over a real loopback endpoint.</summary>
public sealed class ChatClientPipelineTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task The_factory_stacks_cache_router_limiter_and_telemetry_and_the_worker_adds_nothing_more()
    {
        await using var server = await LocalModelServer.StartAsync();
        var options = TestOptions.For(server);
        options.AnswerCache.Enabled = true;
        options.Endpoints["other"] = new PgLlmEndpointOptions { BaseUrl = server.BaseUrl.ToString(), ApiKey = server.ApiKey };
        await using var dataSource = NpgsqlDataSource.Create("Host=127.0.0.1;Username=unused");

        using var client = ChatClientFactory.Create(options, dataSource);

        Assert.IsType<AnswerCacheChatClient>(client);
        Assert.NotNull(client.GetService<EndpointRouterChatClient>());
        Assert.NotNull(client.GetService<RateLimitingChatClient>());
        Assert.NotNull(client.GetService<OpenTelemetryChatClient>());
        Assert.Same(client, ChatClientFactory.WithTelemetry(client));
    }

    [Fact]
    public async Task A_hand_made_client_gets_the_gen_ai_metrics_and_is_not_disposed_by_the_wrapper()
    {
        const string model = "pipeline-test-model";
        await using var server = await LocalModelServer.StartAsync();
        server.Responder = _ => ModelReply.Json("{\"ok\": true}");
        var durations = new ConcurrentQueue<double>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == PgLlmMetrics.MeterName && instrument.Name == "gen_ai.client.operation.duration")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<double>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "gen_ai.request.model" && Equals(tag.Value, model))
                {
                    durations.Enqueue(value);
                }
            }
        });
        listener.Start();
        using var handMade = new DisposalWatcher(new OpenAiCompatibleChatClient(server.BaseUrl, server.ApiKey, model));
        using var timeout = new CancellationTokenSource(Bound);

        var wrapped = ChatClientFactory.WithTelemetry(handMade);
        var response = await wrapped.GetResponseAsync([new ChatMessage(ChatRole.User, "hi")], cancellationToken: timeout.Token);
        wrapped.Dispose();

        Assert.NotSame(handMade, wrapped);
        Assert.Equal("{\"ok\": true}", response.Text);
        Assert.Single(durations);
        Assert.False(handMade.Disposed);
    }

    [Fact]
    public void The_hand_registered_client_of_docs_operations_md_keeps_its_stages_and_the_worker_takes_it()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration["PgLlm:ConnectionString"] = "Host=127.0.0.1;Username=unused";
        builder.Configuration["OPENAI_API_KEY"] = "sk-test";

        // As in docs/operations.md, "Metrics".
        builder.Services.AddKeyedSingleton<IChatClient>(PgLlmServiceCollectionExtensions.ChatClientKey, (sp, _) =>
            new OpenAiCompatibleChatClient(new Uri("https://api.openai.com/v1"), builder.Configuration["OPENAI_API_KEY"], "gpt-4o-mini")
                .AsBuilder()
                .UsePgLlmRateLimiting(new PgLlmRateLimitOptions { RequestsPerMinute = 500 })
                .UsePgLlmTelemetry()
                .Build(sp));
        builder.Services.AddPgLlm(builder.Configuration);
        using var host = builder.Build();

        var client = host.Services.GetRequiredKeyedService<IChatClient>(PgLlmServiceCollectionExtensions.ChatClientKey);
        Assert.IsType<RateLimitingChatClient>(client);
        Assert.NotNull(client.GetService<OpenTelemetryChatClient>());
        Assert.Same(client, ChatClientFactory.WithTelemetry(client));
        Assert.NotNull(host.Services.GetRequiredService<PgLlm.Worker.PgLlmWorker>());
    }

    private sealed class DisposalWatcher(IChatClient inner) : DelegatingChatClient(inner)
    {
        public bool Disposed { get; private set; }

        protected override void Dispose(bool disposing)
        {
            Disposed = true;
            base.Dispose(disposing);
        }
    }
}
