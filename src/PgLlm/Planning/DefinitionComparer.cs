using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using NpgsqlTypes;
using PgLlm.Completions;
using PgLlm.Failures;
using PgLlm.Migrations;
using PgLlm.Observability;
using PgLlm.Queue;
using PgLlm.Worker;

namespace PgLlm.Planning;

/// <summary>
/// <c>pgllm compare</c>: runs a task's current definition on a sample of the rows an older one wrote
/// (<c>llm.plan_rows(task, 'stale')</c>) without writing them. Each prompt is rendered and sent as the worker sends it
/// (<see cref="ModelCaller"/>: system prompt, user message, JSON schema; the endpoint's rate limits apply, shared with the
/// workers through the database while the governor is on), each answer
/// validated as the worker validates it (<see cref="AnswerValidator"/>), and compared per target with the value the row
/// holds (<see cref="AnswerAgreement"/>). Every answer is kept in <c>llm.compare_sample</c> under the run's id; the
/// task's table and <c>llm.job</c> are only read.
/// </summary>
public static class DefinitionComparer
{
    /// <summary>Compares <paramref name="sample"/> stale rows of <paramref name="task"/>; the calls go through <paramref name="chatClient"/>.</summary>
    /// <exception cref="ArgumentException">The task is not registered, or <paramref name="sample"/> is below 1.</exception>
    public static async Task<CompareReport> RunAsync(
        NpgsqlDataSource dataSource, IChatClient chatClient, PgLlmOptions options, string task, int sample, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(chatClient);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(sample, 1);
        using var registry = new TaskRegistry(dataSource);
        var definition = await registry.FindAsync(task, cancellationToken).ConfigureAwait(false)
            ?? throw new ArgumentException($"task '{task}' is not registered.", nameof(task));
        var rows = await StaleRowsAsync(dataSource, task, sample, cancellationToken).ConfigureAwait(false);
        var caller = new ModelCaller(chatClient, options.Model, options.Worker.MaxPromptBytes);
        var samples = new CompareSample[rows.Count];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Math.Clamp(options.Worker.Concurrency, 1, 8), CancellationToken = cancellationToken };
        var sharing = ShareLimits(dataSource, caller, options);
        try
        {
            await Parallel.ForEachAsync(Enumerable.Range(0, rows.Count), parallel, async (i, token) =>
                samples[i] = await AskAsync(caller, definition, rows[i], options.Worker.ModelTimeout, token).ConfigureAwait(false)).ConfigureAwait(false);
        }
        finally
        {
            sharing.ForEach(s => s.Dispose());
        }

        var price = await PlanPrices.ForModelAsync(dataSource, options, definition.Model, cancellationToken).ConfigureAwait(false);
        var runId = await SaveAsync(dataSource, task, samples, price, cancellationToken).ConfigureAwait(false);
        var hash = await CurrentHashAsync(dataSource, task, cancellationToken).ConfigureAwait(false);
        var (input, output) = (samples.Sum(s => (long)(s.InputTokens ?? 0)), samples.Sum(s => (long)(s.OutputTokens ?? 0)));
        return new CompareReport(
            runId, task, hash, samples.Length, samples.Count(s => s.Invalid), samples.Count(s => s.Error is not null && !s.Invalid), input, output,
            price is null ? null : Cost(price, input, output), Agreements(definition, samples))
        {
            FirstError = samples.FirstOrDefault(s => s.Error is not null)?.Error,
        };
    }

    /// <summary>
    /// With the endpoint governor on (the default), the calls take their permits from the rate-limit buckets every
    /// worker of the database shares (<c>llm.endpoint_bucket</c>), as a worker's do: a comparison beside running
    /// workers keeps the endpoint under its limits. The handles that end it.
    /// </summary>
    private static List<IDisposable> ShareLimits(NpgsqlDataSource dataSource, ModelCaller caller, PgLlmOptions options)
    {
        var sharing = new List<IDisposable>();
        if (!options.Governor.Enabled)
        {
            return sharing;
        }

        foreach (var endpoint in new string?[] { null }.Concat(options.Endpoints.Keys))
        {
            if (caller.RateLimiterOf(endpoint) is { } limiter)
            {
                var configured = endpoint is null ? (options.BaseUrl, options.ApiKey, options.Model)
                    : (options.Endpoints[endpoint].BaseUrl, options.Endpoints[endpoint].ApiKey, options.Endpoints[endpoint].Model);
                var gate = new EndpointGate(EndpointGovernor.NameOf(endpoint), EndpointGovernor.ConfigHash(configured.Item1, configured.Item2, configured.Item3));
                sharing.Add(limiter.ShareLimits(new SharedEndpointLimits(dataSource, gate, TimeProvider.System, NullLogger.Instance)));
            }
        }

        return sharing;
    }

    /// <summary>The endpoint that serves <paramref name="task"/> (its model names it, as the worker routes it) when the governor stopped it; else null.</summary>
    public static async Task<EndpointStatus?> StoppedEndpointAsync(NpgsqlDataSource dataSource, PgLlmOptions options, string task, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentNullException.ThrowIfNull(options);
        await using var command = dataSource.CreateCommand("SELECT model FROM llm.task WHERE name = $1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        var model = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string;
        var endpoint = EndpointGovernor.NameOf(EndpointRouterChatClient.EndpointOf(model ?? options.Model, options.Endpoints.ContainsKey));
        return (await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false))
            .FirstOrDefault(e => e.Endpoint == endpoint && e.State == "stopped");
    }

    /// <summary>Asks the model for one row and compares its answer with the row's values.</summary>
    private static async Task<CompareSample> AskAsync(
        ModelCaller caller, TaskDefinition definition, (string Key, JsonElement Inputs, JsonElement Targets) row, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var old = row.Targets.GetRawText();
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(timeout);
        try
        {
            var answer = await caller.AskAsync(definition, row.Inputs, limit.Token).ConfigureAwait(false);
            using var json = JsonDocument.Parse(answer.Json);
            var agreement = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var target in definition.TargetColumns)
            {
                var newValue = json.RootElement.TryGetProperty(target, out var n) ? n : default;
                var oldValue = row.Targets.TryGetProperty(target, out var o) ? o : default;
                agreement[target] = Math.Round(AnswerAgreement.Of(KindOf(definition, target), oldValue, newValue), 4);
            }

            return new CompareSample(row.Key, old, answer.Json, JsonSerializer.Serialize(agreement), false, null, answer.InputTokens, answer.OutputTokens);
        }
        catch (InvalidAnswerException ex)
        {
            return new CompareSample(row.Key, old, null, null, true, ex.Message, ex.Usage?.InputTokens, ex.Usage?.OutputTokens);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new CompareSample(row.Key, old, null, null, false, $"the model did not answer within {timeout.TotalSeconds:0.#} s", null, null);
        }
#pragma warning disable CA1031 // Any failure of one call is that row's outcome, reported with the others'.
        catch (Exception ex) when (ex is not OperationCanceledException)
#pragma warning restore CA1031
        {
            return new CompareSample(row.Key, old, null, null, false, FailureClassifier.Classify(ex).Message, null, null);
        }
    }

    /// <summary>The kind of answer a target receives, from its property in the task's JSON schema.</summary>
    internal static string KindOf(TaskDefinition definition, string target) =>
        definition.JsonSchema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object
        && properties.TryGetProperty(target, out var property) ? TableCheck.KindOf(property) : "string";

    private static List<TargetAgreement> Agreements(TaskDefinition definition, CompareSample[] samples)
    {
        var valid = samples.Where(s => s.Agreement is not null).Select(s => JsonSerializer.Deserialize<Dictionary<string, double>>(s.Agreement!)!).ToList();
        return definition.TargetColumns.Select(target =>
        {
            var values = valid.Select(v => v[target]).ToList();
            var kind = KindOf(definition, target);
            return new TargetAgreement(target, kind, AnswerAgreement.IsExact(kind), values.Count, values.Count(v => v >= 1), values.Count == 0 ? null : values.Average());
        }).ToList();
    }

    private static decimal Cost(PgLlmPrice price, long input, long output) =>
        Math.Round(((input * price.InputPerMillion) + (output * price.OutputPerMillion)) / 1_000_000m, 10);

    private static async Task<List<(string Key, JsonElement Inputs, JsonElement Targets)>> StaleRowsAsync(
        NpgsqlDataSource dataSource, string task, int sample, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "SELECT i.row_key::text, i.inputs::text, i.targets::text " +
            "FROM llm.plan_inputs($1, ARRAY(SELECT p.row_key FROM llm.plan_rows($1, 'stale', $2) AS p)) AS i");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = sample });
        var rows = new List<(string, JsonElement, JsonElement)>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            using var inputs = JsonDocument.Parse(reader.GetString(1));
            using var targets = JsonDocument.Parse(reader.GetString(2));
            rows.Add((reader.GetString(0), inputs.RootElement.Clone(), targets.RootElement.Clone()));
        }

        return rows;
    }

    /// <summary>Keeps the run's answers in <c>llm.compare_sample</c> under a new run id, which it returns.</summary>
    private static async Task<long> SaveAsync(NpgsqlDataSource dataSource, string task, CompareSample[] samples, PgLlmPrice? price, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(
            "WITH run AS (SELECT nextval('llm.compare_run_id') AS id), " +
            "saved AS (INSERT INTO llm.compare_sample (run_id, task, row_key, old_answer, new_answer, agreement, valid, error, input_tokens, output_tokens, estimated_cost) " +
            "SELECT run.id, $1, s.* FROM run, unnest($2::jsonb[], $3::jsonb[], $4::jsonb[], $5::jsonb[], $6::boolean[], $7::text[], $8::integer[], $9::integer[], $10::numeric[]) AS s) " +
            "SELECT id FROM run");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        AddJson(command, samples.Select(s => (string?)s.RowKey));
        AddJson(command, samples.Select(s => (string?)s.OldAnswer));
        AddJson(command, samples.Select(s => s.NewAnswer));
        AddJson(command, samples.Select(s => s.Agreement));
        command.Parameters.Add(new NpgsqlParameter<bool[]> { TypedValue = samples.Select(s => s.NewAnswer is not null).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = samples.Select(s => s.Error).ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<int?[]> { TypedValue = samples.Select(s => s.InputTokens).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<int?[]> { TypedValue = samples.Select(s => s.OutputTokens).ToArray() });
        command.Parameters.Add(new NpgsqlParameter<decimal?[]>
        {
            TypedValue = samples.Select(s => price is null || (s.InputTokens is null && s.OutputTokens is null) ? (decimal?)null
                : Cost(price, s.InputTokens ?? 0, s.OutputTokens ?? 0)).ToArray(),
            NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Numeric,
        });
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private static void AddJson(NpgsqlCommand command, IEnumerable<string?> values) =>
        command.Parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb });

    private static async Task<string> CurrentHashAsync(NpgsqlDataSource dataSource, string task, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand("SELECT definition_hash FROM llm.task WHERE name = $1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = task });
        return (string)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }
}
