using Npgsql;

namespace PgLlm.OperationsConsole;

/// <summary>Settings of the operations console (<c>services.AddPgLlmConsole(...)</c>).</summary>
public sealed class PgLlmConsoleOptions
{
    /// <summary>The database role every query of the console runs as (<c>SET ROLE</c>); made by queue step 14.</summary>
    public const string DefaultDatabaseRole = "pgllm_console";

    /// <summary>
    /// The PostgreSQL connection string (key/value or <c>postgresql://</c> URL). The console connects with it and runs as
    /// <see cref="DatabaseRole"/>: the login must be a member of it (<c>GRANT pgllm_console TO my_login</c>).
    /// </summary>
    public string? ConnectionString { get; set; }

    /// <summary>
    /// A data source to use as it is instead of <see cref="ConnectionString"/>: its connections must already run with the
    /// console role's rights (for instance <c>Options=-c role=pgllm_console</c> in its connection string).
    /// </summary>
    public NpgsqlDataSource? DataSource { get; set; }

    /// <summary>The role the console's queries run as; null runs them as the login itself (not recommended). Default <c>pgllm_console</c>.</summary>
    public string? DatabaseRole { get; set; } = DefaultDatabaseRole;

    /// <summary>
    /// The name of the ASP.NET Core authorization policy a user must satisfy to act (retry, pause, resume, release a
    /// cell, cancel a batch): the operator role. Everyone else who reaches the console only reads it. Null: every user
    /// who reaches the console is an operator (unless <see cref="ReadOnly"/>).
    /// </summary>
    public string? OperatorPolicy { get; set; }

    /// <summary>No actions at all, for anyone: the console only shows.</summary>
    public bool ReadOnly { get; set; }

    /// <summary>How often the overview refreshes itself in the browser. Default 5 seconds.</summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The actor written to the action log when the request has no authenticated user name. Default <c>anonymous</c>.</summary>
    public string AnonymousActor { get; set; } = "anonymous";
}
