namespace PgLlm;

/// <summary>
/// Marks a record or class as a PostgreSQL table whose columns PgLlm fills with model answers.
/// The key is the property marked <c>[Key]</c> (several make a composite key) or the one named <c>Id</c>;
/// column names are the snake_case of property names unless <c>[Column("...")]</c> says otherwise.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct, AllowMultiple = false, Inherited = false)]
public sealed class LlmTableAttribute : Attribute
{
    /// <summary>Declares the table.</summary>
    /// <param name="name">The table's name, exactly as PostgreSQL spells it (it is always quoted).</param>
    public LlmTableAttribute(string name) => Name = name;

    /// <summary>The table's name.</summary>
    public string Name { get; }

    /// <summary>The table's schema; <c>public</c> by default.</summary>
    public string Schema { get; set; } = "public";
}
