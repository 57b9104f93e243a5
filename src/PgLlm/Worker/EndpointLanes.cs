using PgLlm.Completions;
using PgLlm.Queue;

namespace PgLlm.Worker;

/// <summary>
/// One lane of model-call slots per endpoint. A job holds a slot of its task's endpoint from its claim
/// to the end of its model call, and the worker claims for each lane with free slots only the tasks that lane's
/// endpoint serves: a slow or failing endpoint fills its own lane and no other, so tasks on other
/// endpoints keep flowing. With no named endpoints there is one lane and every claim takes any task.
/// </summary>
internal sealed class EndpointLanes
{
    private readonly Lane[] _lanes;
    private readonly string? _defaultModel;
    private IReadOnlyDictionary<string, TaskDefinition>? _filtersFor;

    public EndpointLanes(PgLlmOptions options)
    {
        var lanes = new List<Lane> { new(null, options.Worker.Concurrency) };
        foreach (var (name, endpoint) in options.Endpoints.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            var concurrency = endpoint.Concurrency ?? options.Worker.Concurrency;
            if (concurrency < 1)
            {
                throw new ArgumentException($"PgLlm:Endpoints:{name}:Concurrency must be at least 1.", nameof(options));
            }

            lanes.Add(new Lane(name, concurrency));
        }

        _lanes = [.. lanes];
        _defaultModel = options.Model;
        TotalConcurrency = lanes.Sum(l => l.Concurrency);
    }

    public IReadOnlyList<Lane> All => _lanes;

    /// <summary>The most model calls in flight at once, over all endpoints.</summary>
    public int TotalConcurrency { get; }

    /// <summary>
    /// Sets each lane's claim filter for the registered <paramref name="tasks"/> (recomputed only when the
    /// registry was reloaded). The default lane takes every task not sent to a named endpoint, including
    /// jobs of tasks no longer registered, so those are still claimed and settled.
    /// </summary>
    public void Update(IReadOnlyDictionary<string, TaskDefinition> tasks)
    {
        if (_lanes.Length == 1 || ReferenceEquals(tasks, _filtersFor))
        {
            return;
        }

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
            calls += lane.Concurrency - lane.Calls.CurrentCount;
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

    /// <summary>
    /// An endpoint's slots and the tasks its claims take. A lane claims up to half its concurrency ahead
    /// (<see cref="Ahead"/>): those jobs wait in the worker for a call slot, so a call that ends is
    /// followed at once by the next, without a claim's round trip in between; and while jobs wait, the
    /// lane claims only once at least half that many are wanted, so a worker whose calls end one at a
    /// time (a slow model) claims in batches rather than one job per call: with a 200 ms model at
    /// concurrency 128, claims of 34 jobs (17 with a quarter ahead), half the claims and inputs reads.
    /// </summary>
    internal sealed class Lane
    {
        private int _waiting;

        public Lane(string? endpoint, int concurrency)
        {
            Endpoint = endpoint;
            Concurrency = concurrency;
            Ahead = concurrency < 4 ? 0 : concurrency / 2;
            Slots = new SemaphoreSlim(concurrency + Ahead, concurrency + Ahead);
            Calls = new CallGate(concurrency);
        }

        /// <summary>The named endpoint; null for the default one.</summary>
        public string? Endpoint { get; }

        public int Concurrency { get; }

        /// <summary>Jobs claimed beyond the concurrency, waiting for a call slot: half of it, none below a concurrency of 4.</summary>
        public int Ahead { get; }

        /// <summary>Free while no claimed job holds it: taken at the claim, given back when the job's model call ends.</summary>
        public SemaphoreSlim Slots { get; }

        /// <summary>One per model call in flight: the endpoint's concurrency.</summary>
        public CallGate Calls { get; }

        /// <summary>Claimed jobs not yet holding a call slot.</summary>
        public int Waiting => Volatile.Read(ref _waiting);

        /// <summary>Whether to claim now: always when no claimed job waits, else once half the jobs ahead are wanted.</summary>
        public bool WorthClaiming => Waiting == 0 || Slots.CurrentCount >= Math.Max(1, Ahead / 2);

        public void JobClaimed() => Interlocked.Increment(ref _waiting);

        public void JobLeftWaiting() => Interlocked.Decrement(ref _waiting);

        public TaskFilter Filter { get; set; } = TaskFilter.Any;

        /// <summary>Whether this lane's claims can match a task at all.</summary>
        public bool CanClaim => Filter.Only is not { Length: 0 };
    }
}
