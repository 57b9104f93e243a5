namespace PgLlm.Benchmarks;

/// <summary>
/// Sizes the chunk of jobs a busy user-update window makes due, from the drain rate measured so far, so
/// that the drain outlasts the window: a window whose drain ran out would measure the updates beside an
/// idle worker for its last part. The rate starts from an estimate (the model's ideal rate, or the drain
/// measurement's) and only grows: each busy window's rate is observed, and one the drain did not cover
/// (whose rate is then too low: the worker ran out of jobs) doubles it. The jobs a window leaves go back
/// to the pool scheduled ahead, so a generous chunk costs no drain time.
/// </summary>
internal sealed class UpdateBacklog
{
    /// <summary>
    /// Jobs due per window over the rate times the window's length. A busy window's rate moves by half and
    /// more from one window to the next (more with an instant model), so twice: what is left goes back.
    /// </summary>
    private const double Margin = 2;

    private readonly double _rampUpSeconds;

    public UpdateBacklog(double expectedRate, double windowSeconds, double rampUpSeconds)
    {
        Rate = expectedRate;
        WindowSeconds = windowSeconds;
        _rampUpSeconds = rampUpSeconds;
    }

    /// <summary>The highest drain rate expected or seen, jobs/s.</summary>
    public double Rate { get; private set; }

    /// <summary>The longest busy window expected or seen (the clients' answer takes a little longer than the window).</summary>
    public double WindowSeconds { get; private set; }

    /// <summary>Jobs still scheduled ahead, not yet made due.</summary>
    public long Pool { get; set; }

    /// <summary>Jobs the next busy window makes due: more than the worker drains in its ramp-up and the window.</summary>
    public int Chunk => (int)Math.Ceiling(Margin * Rate * (WindowSeconds + _rampUpSeconds));

    /// <summary>Takes one busy window's measured drain rate and length into account.</summary>
    public void Observe(double rate, double seconds, bool covered)
    {
        Rate = covered ? Math.Max(Rate, rate) : 2 * Math.Max(Rate, rate);
        WindowSeconds = Math.Max(WindowSeconds, seconds);
    }
}
