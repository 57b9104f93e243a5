using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using PgLlm.Completions;
using PgLlm.Local;
using PgLlm.Observability;
using PgLlm.Tests.Integration;
using PgLlm.Worker;

namespace PgLlm.Tests.Operations;

/// <summary>The meter's instruments, observed with a MeterListener while a real worker drains a real queue.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class MetricsTests
{
    private readonly PgLlmFixture _fixture;

    public MetricsTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task Jobs_model_calls_and_tokens_are_counted_with_gen_ai_and_task_tags()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        var flakyCalls = 0;
        _fixture.Model.Responder = request => request.UserText switch
        {
            "Echo refused" => ModelReply.Error(400, "refused"),
            "Echo flaky" when Interlocked.Increment(ref flakyCalls) == 1 => ModelReply.Error(500, "hiccup"),
            _ => ModelReply.Json(DeterministicModel.Answer(request)),
        };
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'fine'), (2, 'refused'), (3, 'flaky')");
        using var recorder = new Recorder();

        await Ops.Worker(db.DataSource, Ops.Options(_fixture)).RunUntilIdleAsync();

        const string task = "public.flaky:output";
        Assert.Equal(4, recorder.Sum("pgllm.jobs.claimed", PgLlmMetrics.TaskTag, task));
        Assert.Equal(2, recorder.Sum("pgllm.jobs.succeeded", PgLlmMetrics.TaskTag, task));
        Assert.Equal(1, recorder.Sum("pgllm.jobs.retried", PgLlmMetrics.TaskTag, task));
        Assert.Equal(1, recorder.Sum("pgllm.jobs.failed", PgLlmMetrics.TaskTag, task));

        var durations = recorder.Measurements("gen_ai.client.operation.duration");
        Assert.Equal(4, durations.Count);
        Assert.All(durations, d => Assert.Equal("chat", d.Tags["gen_ai.operation.name"]));
        Assert.All(durations, d => Assert.Equal("test-model", d.Tags["gen_ai.request.model"]));
        Assert.Equal(2, durations.Count(d => d.Tags.ContainsKey("error.type")));

        var input = await db.DataSource.ScalarAsync<long>("SELECT sum(input_tokens) FROM llm.job");
        var output = await db.DataSource.ScalarAsync<long>("SELECT sum(output_tokens) FROM llm.job");
        Assert.True(input > 0 && output > 0);
        Assert.Equal(input, recorder.Sum("gen_ai.client.token.usage", "gen_ai.token.type", "input"));
        Assert.Equal(output, recorder.Sum("gen_ai.client.token.usage", "gen_ai.token.type", "output"));
    }

    [Fact]
    public async Task The_queue_depth_gauge_reports_the_last_sample_by_state()
    {
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) SELECT i, 'x' FROM generate_series(1, 3) AS i");
        using var recorder = new Recorder();

        PgLlmMetrics.RecordQueueDepth(await PgLlmStatus.ReadDepthAsync(db.DataSource));
        recorder.Listener.RecordObservableInstruments();

        Assert.Equal(3, recorder.Last("pgllm.queue.depth", "pgllm.job.state", "pending"));
        Assert.Equal(0, recorder.Last("pgllm.queue.depth", "pgllm.job.state", "running"));
    }

    internal sealed record Measurement(string Instrument, double Value, IReadOnlyDictionary<string, object?> Tags);

    /// <summary>Collects every measurement of the PgLlm meter while alive.</summary>
    internal sealed class Recorder : IDisposable
    {
        private readonly ConcurrentQueue<Measurement> _measurements = new();

        public Recorder()
        {
            Listener = new MeterListener
            {
                InstrumentPublished = (instrument, listener) =>
                {
                    if (instrument.Meter.Name == PgLlmMetrics.MeterName)
                    {
                        listener.EnableMeasurementEvents(instrument);
                    }
                },
            };
            // Microsoft.Extensions.AI's OpenTelemetry stage records token usage as int.
            Listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Add(instrument, value, tags));
            Listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument, value, tags));
            Listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument, value, tags));
            Listener.Start();
        }

        public MeterListener Listener { get; }

        public List<Measurement> Measurements(string instrument) => _measurements.Where(m => m.Instrument == instrument).ToList();

        public double Sum(string instrument, string tag, string value) =>
            Measurements(instrument).Where(m => Equals(m.Tags.GetValueOrDefault(tag), value)).Sum(m => m.Value);

        public double Last(string instrument, string tag, string value) =>
            Measurements(instrument).Last(m => Equals(m.Tags.GetValueOrDefault(tag), value)).Value;

        public void Dispose() => Listener.Dispose();

        private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var dictionary = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var tag in tags)
            {
                dictionary[tag.Key] = tag.Value;
            }

            _measurements.Enqueue(new Measurement(instrument.Name, value, dictionary));
        }
    }
}

/// <summary>Microsoft.Extensions.AI's OpenTelemetry middleware over the default model client, as docs/operations.md shows it.</summary>
[Collection(IntegrationGroup.Name)]
public sealed class OpenTelemetryMiddlewareTests
{
    private readonly PgLlmFixture _fixture;

    public OpenTelemetryMiddlewareTests(PgLlmFixture fixture)
    {
        _fixture = fixture;
        fixture.Model.Reset();
    }

    [Fact]
    public async Task The_middleware_traces_each_worker_call_with_gen_ai_tags_from_the_default_client()
    {
        const string source = "PgLlm.Tests.AI";
        var activities = new System.Collections.Concurrent.ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name == source,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activities.Enqueue,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        await using var db = await Ops.CreateDatabaseAsync(_fixture);
        await db.DataSource.ExecAsync("INSERT INTO flaky (id, input) VALUES (1, 'a'), (2, 'b')");
        var options = Ops.Options(_fixture);
        using var client = ChatClientFactory.Create(options).AsBuilder().UseOpenTelemetry(sourceName: source).Build();

        using var worker = new PgLlmWorker(db.DataSource, client, Microsoft.Extensions.Options.Options.Create(options));
        Assert.Equal(2, await worker.RunUntilIdleAsync());

        var calls = activities.Where(a => a.OperationName.StartsWith("chat", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, calls.Count);
        Assert.All(calls, a =>
        {
            Assert.Equal("test-model", a.GetTagItem("gen_ai.request.model"));
            Assert.Equal(_fixture.Model.BaseUrl.Host, a.GetTagItem("server.address"));
            Assert.NotNull(a.GetTagItem("gen_ai.usage.input_tokens"));
        });
    }
}
