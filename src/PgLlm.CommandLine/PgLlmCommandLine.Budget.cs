using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.Json;
using Npgsql;
using PgLlm.Observability;

namespace PgLlm.Cli;

/// <summary><c>pgllm budget set|list|clear</c>: daily caps of tokens and estimated cost per task or endpoint (UTC day).</summary>
public sealed partial class PgLlmCommandLine
{
    private Command CreateBudgetCommand()
    {
        var command = new Command("budget", "Daily caps (UTC day) of tokens and/or estimated cost per task or endpoint: at its cap a task's or endpoint's jobs wait, pending, until 00:00 UTC or a raised cap.");
        var list = new Command("list", "Show each budget: spent today, reserved by calls in flight, cap, remaining, and whether its jobs wait.");
        SetAction(list, async (parseResult, cancellationToken) =>
        {
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            var budgets = await BudgetStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
            if (budgets.Count == 0)
            {
                Say($"No budget is set (set one with 'pgllm budget set --task NAME|--endpoint NAME --daily-tokens N|--daily-cost X').");
                return ExitOk;
            }

            WriteBudgets(budgets);
            return ExitOk;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(CreateBudgetSetCommand());
        command.Subcommands.Add(CreateBudgetClearCommand());
        return command;
    }

    private Command CreateBudgetSetCommand()
    {
        var (task, endpoint) = BudgetScopeOptions();
        var tokens = new Option<long?>("--daily-tokens") { Description = "The cap of input + output tokens per UTC day." };
        var cost = new Option<decimal?>("--daily-cost") { Description = "The cap of estimated cost per UTC day (needs prices: PgLlm:Prices or llm.model_price)." };
        var set = new Command("set", "Set, raise or lower a budget: the caps given replace the former ones (a cap not given is none). Workers apply it within a second.");
        set.Options.Add(task);
        set.Options.Add(endpoint);
        set.Options.Add(tokens);
        set.Options.Add(cost);
        set.Validators.Add(result =>
        {
            ValidateScope(result, task, endpoint);
            if (result.GetResult(tokens) is null && result.GetResult(cost) is null)
            {
                result.AddError("give --daily-tokens and/or --daily-cost ('pgllm budget clear' removes a budget).");
            }
        });
        tokens.Validators.Add(result => NotNegative(result, () => result.GetValueOrDefault<long?>() < 0));
        cost.Validators.Add(result => NotNegative(result, () => result.GetValueOrDefault<decimal?>() < 0));
        SetAction(set, async (parseResult, cancellationToken) =>
        {
            var (scope, name) = ScopeOf(parseResult, task, endpoint);
            var (dailyTokens, dailyCost) = (parseResult.GetValue(tokens), parseResult.GetValue(cost));
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            try
            {
                await BudgetStatus.SetAsync(dataSource, scope, name, dailyTokens, dailyCost, cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidParameterValue)
            {
                throw new CommandLineException(ex.MessageText + (ex.Hint is null ? "." : ". " + ex.Hint + "."), ex);
            }

            var caps = string.Join(" and ", new[]
            {
                dailyTokens is { } t ? t.ToString(CultureInfo.InvariantCulture) + " tokens" : null,
                dailyCost is { } c ? "cost " + BudgetStatus.FormatCost(c) : null,
            }.Where(s => s is not null));
            Say($"[green]Budget of {scope} {name} set[/]: at most {caps} per UTC day.");
            await WarnOfBudgetGapsAsync(dataSource, scope, name, dailyCost is not null, cancellationToken).ConfigureAwait(false);
            return ExitOk;
        });
        return set;
    }

    /// <summary>What would make a budget count nothing: an endpoint no worker has registered, a cost cap without prices.</summary>
    private async Task WarnOfBudgetGapsAsync(NpgsqlDataSource dataSource, string scope, string name, bool costCap, CancellationToken cancellationToken)
    {
        if (scope == "endpoint")
        {
            var known = await EndpointStatus.ReadAllAsync(dataSource, cancellationToken).ConfigureAwait(false);
            if (known.Count > 0 && known.All(e => e.Endpoint != name))
            {
                Say($"[yellow]Note[/]: no worker has registered an endpoint '{name}' yet (known: {string.Join(", ", known.Select(e => e.Endpoint))}).");
            }
        }

        if (costCap)
        {
            await using var prices = dataSource.CreateCommand("SELECT count(*) FROM llm.model_price");
            if (await prices.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is 0L)
            {
                Say($"[yellow]Note[/]: no prices in llm.model_price yet: a cost cap counts nothing until there are (PgLlm:Prices, written by the worker).");
            }
        }
    }

    private Command CreateBudgetClearCommand()
    {
        var (task, endpoint) = BudgetScopeOptions();
        var clear = new Command("clear", "Remove a budget: its jobs are claimed again at once.");
        clear.Options.Add(task);
        clear.Options.Add(endpoint);
        clear.Validators.Add(result => ValidateScope(result, task, endpoint));
        SetAction(clear, async (parseResult, cancellationToken) =>
        {
            var (scope, name) = ScopeOf(parseResult, task, endpoint);
            await using var dataSource = OpenDataSource(ReadOptions(parseResult));
            if (!await BudgetStatus.ClearAsync(dataSource, scope, name, cancellationToken).ConfigureAwait(false))
            {
                throw new CommandLineException($"there is no budget of {scope} '{name}' (see 'pgllm budget list').");
            }

            Say($"[green]Budget of {scope} {name} cleared[/]: its jobs are claimed again.");
            return ExitOk;
        });
        return clear;
    }

    /// <summary>A cap's own check: not negative (a value that is no number is the parser's error, said once).</summary>
    private static void NotNegative(OptionResult result, Func<bool> negative)
    {
        try
        {
            if (negative())
            {
                result.AddError($"{result.Option.Name} cannot be negative.");
            }
        }
        catch (InvalidOperationException)
        {
            // Not a number: the parser says so.
        }
    }

    private static (Option<string> Task, Option<string> Endpoint) BudgetScopeOptions() =>
        (new Option<string>("--task") { Description = "The task's name (as in 'pgllm status')." },
         new Option<string>("--endpoint") { Description = "The endpoint: 'default', or a name under PgLlm:Endpoints." });

    private static void ValidateScope(CommandResult result, Option<string> task, Option<string> endpoint)
    {
        var (t, e) = (result.GetValue(task), result.GetValue(endpoint));
        if ((t is null) == (e is null))
        {
            result.AddError("give either --task NAME or --endpoint NAME.");
        }
        else if (string.IsNullOrWhiteSpace(t ?? e))
        {
            result.AddError("the task or endpoint name is empty.");
        }
    }

    private static (string Scope, string Name) ScopeOf(ParseResult parseResult, Option<string> task, Option<string> endpoint) =>
        parseResult.GetValue(task) is { } name ? ("task", name) : ("endpoint", parseResult.GetValue(endpoint)!);

    /// <summary>One line per budget: spent today (and reserved in flight) against its caps, what is left, and its state.</summary>
    private void WriteBudgets(IReadOnlyList<BudgetStatus> budgets)
    {
        foreach (var budget in budgets)
        {
            var parts = new List<string>();
            if (budget.DailyTokens is { } tokenCap)
            {
                parts.Add(string.Create(CultureInfo.InvariantCulture,
                    $"tokens {budget.SpentTokens} spent + {budget.ReservedTokens} reserved of {tokenCap}, {budget.TokensLeft} left"));
            }

            if (budget.DailyCost is { } costCap)
            {
                parts.Add($"cost {BudgetStatus.FormatCost(budget.SpentCost)} spent + {BudgetStatus.FormatCost(budget.ReservedCost)} reserved " +
                          $"of {BudgetStatus.FormatCost(costCap)}, {BudgetStatus.FormatCost(budget.CostLeft ?? 0)} left");
            }

            var day = budget.Day.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
            if (budget.Waiting)
            {
                Say($"Budget {budget.Scope} {budget.Name} ({day} UTC): {string.Join("; ", parts)}: [yellow]{budget.Describe()}[/]");
            }
            else
            {
                Say($"Budget {budget.Scope} {budget.Name} ({day} UTC): {string.Join("; ", parts)}: [green]open[/]");
            }
        }
    }

    private static void WriteBudgetsJson(Utf8JsonWriter json, IReadOnlyList<BudgetStatus> budgets)
    {
        json.WriteStartArray("budgets");
        foreach (var budget in budgets)
        {
            json.WriteStartObject();
            json.WriteString("scope", budget.Scope);
            json.WriteString("name", budget.Name);
            json.WriteString("day", budget.Day.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture));
            WriteNumberOrNull(json, "dailyTokens", budget.DailyTokens);
            WriteNumberOrNull(json, "dailyCost", budget.DailyCost);
            json.WriteNumber("spentTokens", budget.SpentTokens);
            json.WriteNumber("spentCost", budget.SpentCost);
            json.WriteNumber("reservedTokens", budget.ReservedTokens);
            json.WriteNumber("reservedCost", budget.ReservedCost);
            WriteNumberOrNull(json, "tokensLeft", budget.TokensLeft);
            WriteNumberOrNull(json, "costLeft", budget.CostLeft);
            json.WriteString("state", budget.Waiting ? "waiting" : "open");
            json.WriteString("reason", budget.Waiting ? budget.Describe() : null);
            json.WriteEndObject();
        }

        json.WriteEndArray();
    }

    private static void WriteNumberOrNull(Utf8JsonWriter json, string name, decimal? value)
    {
        if (value is { } number)
        {
            json.WriteNumber(name, number);
        }
        else
        {
            json.WriteNull(name);
        }
    }
}
