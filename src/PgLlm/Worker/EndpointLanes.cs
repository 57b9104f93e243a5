using PgLlm.Completions;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// One lane per endpoint (see <see cref="EndpointLane"/>). A job holds a slot of its task's endpoint from its claim
/// to the end of its model call, and each lane's claim loop claims only the tasks that lane's endpoint serves: a slow or failing endpoint fills its own lane and no other, so tasks on other
/// endpoints keep flowing. With no named endpoints there is one lane and every claim takes any task.
/// </summary>
internal sealed class EndpointLanes
{
    private readonly EndpointLane[] _lanes;
    private readonly string? _defaultModel;
    private IReadOnlyDictionary<string, TaskDefinition>? _filtersFor;

    public EndpointLanes(PgLlmOptions options)
    {
        var lanes = new List<EndpointLane> { new(null, options.Worker.Concurrency, EndpointGovernor.ConfigHash(options.BaseUrl, options.ApiKey, options.Model)) };
        foreach (var (name, endpoint) in options.Endpoints.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            var concurrency = endpoint.Concurrency ?? options.Worker.Concurrency;
            if (concurrency < 1)
            {
                throw new ArgumentException($"PgLlm:Endpoints:{name}:Concurrency must be at least 1.", nameof(options));
            }

            lanes.Add(new EndpointLane(name, concurrency, EndpointGovernor.ConfigHash(endpoint.BaseUrl, endpoint.ApiKey, endpoint.Model)));
        }

        _lanes = [.. lanes];
        _defaultModel = options.Model;
        TotalConcurrency = lanes.Sum(l => l.Concurrency);
    }

    public IReadOnlyList<EndpointLane> All => _lanes;

    /// <summary>The most model calls in flight at once, over all endpoints.</summary>
    public int TotalConcurrency { get; }

    /// <summary>
    /// Sets each lane's claim filter for the registered <paramref name="tasks"/> (recomputed only when the
    /// registry was reloaded). The default lane takes every task not sent to a named endpoint, including
    /// jobs of tasks no longer registered, so those are still claimed and settled.
    /// </summary>
    public void Update(IReadOnlyDictionary<string, TaskDefinition> tasks)
    {
        lock (_lanes)
        {
            if (_lanes.Length > 1 && !ReferenceEquals(tasks, _filtersFor))
            {
                SetFilters(tasks);
            }
        }
    }

    private void SetFilters(IReadOnlyDictionary<string, TaskDefinition> tasks)
    {

        var byEndpoint = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var task in tasks.Values)
        {
            var endpoint = EndpointRouterChatClient.EndpointOf(task.Model ?? _defaultModel, IsNamedEndpoint);
            if (endpoint is not null)
            {
                (byEndpoint.TryGetValue(endpoint, out var list) ? list : byEndpoint[endpoint] = []).Add(task.Name);
            }
        }

        _lanes[0].Filter = new TaskFilter(null, [.. byEndpoint.Values.SelectMany(t => t).Order(StringComparer.Ordinal)]);
        for (var i = 1; i < _lanes.Length; i++)
        {
            // A named endpoint no task uses has nothing to claim (an empty Only matches no task).
            _lanes[i].Filter = new TaskFilter(byEndpoint.TryGetValue(_lanes[i].Endpoint!, out var names) ? [.. names.Order(StringComparer.Ordinal)] : [], null);
        }

        _filtersFor = tasks;
    }

    /// <summary>Model calls in flight now, over all endpoints.</summary>
    public int CallsInFlight()
    {
        var calls = 0;
        foreach (var lane in _lanes)
        {
            calls += lane.CallsInFlight;
        }

        return calls;
    }

    /// <summary>Whether lanes beyond the default one exist, so claims need the registry's task list.</summary>
    public bool NeedsTasks => _lanes.Length > 1;

    private bool IsNamedEndpoint(string name)
    {
        for (var i = 1; i < _lanes.Length; i++)
        {
            if (string.Equals(_lanes[i].Endpoint, name, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }
}
