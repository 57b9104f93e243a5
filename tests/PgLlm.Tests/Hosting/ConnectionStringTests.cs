using Microsoft.Extensions.Configuration;
using Npgsql;
using PgLlm.Hosting;

namespace PgLlm.Tests.Hosting;

/// <summary>postgres:// URLs wherever a connection string is configured, converted to Npgsql's keywords.</summary>
public sealed class ConnectionStringTests
{
    private static NpgsqlConnectionStringBuilder Convert(string url) => new(PgLlmConnectionString.ToNpgsql(url));

    [Fact]
    public void A_url_becomes_npgsql_keywords()
    {
        var builder = Convert("postgres://app:s3cret@db.example.com:6543/reviews");

        Assert.Equal("db.example.com", builder.Host);
        Assert.Equal(6543, builder.Port);
        Assert.Equal("reviews", builder.Database);
        Assert.Equal("app", builder.Username);
        Assert.Equal("s3cret", builder.Password);
    }

    [Fact]
    public void The_postgresql_scheme_and_upper_case_work_too()
    {
        var builder = Convert("PostgreSQL://app@db/reviews");

        Assert.Equal("db", builder.Host);
        Assert.Equal("reviews", builder.Database);
        Assert.Equal("app", builder.Username);
        Assert.Null(builder.Password);
    }

    [Fact]
    public void A_percent_encoded_password_and_names_are_decoded()
    {
        var builder = Convert("postgres://my%20user:p%40ss%3Aw%2Fd%25%3F%23@db:5432/my%2Ddb");

        Assert.Equal("my user", builder.Username);
        Assert.Equal("p@ss:w/d%?#", builder.Password);
        Assert.Equal("my-db", builder.Database);
    }

    [Fact]
    public void A_missing_port_is_postgres_default_and_a_missing_host_is_localhost()
    {
        var withoutPort = Convert("postgres://app:pw@db.example.com/reviews");
        var withoutHost = Convert("postgres:///reviews");

        Assert.Equal(NpgsqlConnection.DefaultPort, withoutPort.Port);
        Assert.Equal("db.example.com", withoutPort.Host);
        Assert.Equal("localhost", withoutHost.Host);
        Assert.Equal("reviews", withoutHost.Database);
    }

    [Fact]
    public void Query_parameters_take_libpq_names()
    {
        var builder = Convert("postgres://app:pw@db:5432/reviews?sslmode=verify-full&application_name=reviews%20worker&connect_timeout=7&sslrootcert=%2Fetc%2Fca.pem&Maximum%20Pool%20Size=5");

        Assert.Equal(SslMode.VerifyFull, builder.SslMode);
        Assert.Equal("reviews worker", builder.ApplicationName);
        Assert.Equal(7, builder.Timeout);
        Assert.Equal("/etc/ca.pem", builder.RootCertificate);
        Assert.Equal(5, builder.MaxPoolSize);
    }

    [Fact]
    public void A_socket_directory_in_the_query_an_ipv6_host_and_several_hosts_work()
    {
        Assert.Equal("/var/run/postgresql", Convert("postgres:///reviews?host=%2Fvar%2Frun%2Fpostgresql").Host);
        var ipv6 = Convert("postgres://app@[::1]:6000/reviews");
        Assert.Equal("::1", ipv6.Host);
        Assert.Equal(6000, ipv6.Port);
        Assert.Equal("primary:5432,replica:5433", Convert("postgres://app@primary:5432,replica:5433/reviews").Host);
    }

    [Fact]
    public void Keywords_are_returned_as_given()
    {
        const string keywords = "Host=db;Database=app;Username=app;Password=pw";

        Assert.Equal(keywords, PgLlmConnectionString.ToNpgsql(keywords));
    }

    [Theory]
    [InlineData("postgres://app:hunter2@db:port/reviews", "the port 'port' is not a number")]
    [InlineData("postgres://app:hunter2@db:70000/reviews", "the port '70000' is not a number")]
    [InlineData("postgres://app:hunter2@db/reviews?sslmode", "the parameter 'sslmode' has no value")]
    [InlineData("postgres://app:hunter2@db/reviews?sslmode=sometimes", "the parameter 'sslmode=sometimes' is not valid")]
    [InlineData("postgres://app:hunter2@db/reviews?no_such_thing=1", "the parameter 'no_such_thing=1' is not valid")]
    [InlineData("postgres://app:hunter2@[::1/reviews", "closing ']'")]
    public void A_bad_url_is_one_line_that_names_the_problem_and_hides_the_password(string url, string expected)
    {
        var error = Assert.Throws<PgLlmConfigurationException>(() => PgLlmConnectionString.ToNpgsql(url));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains("postgres://user:password@host:port/database", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Theory]
    [InlineData(null, "needs a connection string")]
    [InlineData("  ", "needs a connection string")]
    [InlineData("garbage", "is not valid")]
    [InlineData("Hots=db;Password=hunter2", "is not valid")]
    public void A_missing_or_bad_keyword_string_is_one_clear_line(string? value, string expected)
    {
        var error = Assert.Throws<PgLlmConfigurationException>(() => PgLlmConnectionString.ToNpgsql(value));

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Contains("PGLLM_CONNECTION", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void Binding_converts_the_variable_and_the_section()
    {
        var fromVariable = new PgLlmOptions();
        var fromSection = new PgLlmOptions();

        PgLlmServiceCollectionExtensions.Bind(Configuration(("PGLLM_CONNECTION", "postgres://app:pw@db:5433/reviews")), fromVariable);
        PgLlmServiceCollectionExtensions.Bind(Configuration(("PgLlm:ConnectionString", "postgresql://app@db/reviews?sslmode=require")), fromSection);

        var variable = new NpgsqlConnectionStringBuilder(fromVariable.ConnectionString);
        Assert.Equal(("db", 5433, "reviews", "app", "pw"), (variable.Host, variable.Port, variable.Database, variable.Username, variable.Password));
        Assert.Equal(SslMode.Require, new NpgsqlConnectionStringBuilder(fromSection.ConnectionString).SslMode);
    }

    [Fact]
    public void Binding_keeps_an_unreadable_url_for_the_start_to_report()
    {
        var options = new PgLlmOptions();

        PgLlmServiceCollectionExtensions.Bind(Configuration(("PGLLM_CONNECTION", "postgres://app@db:x/reviews")), options);

        Assert.Equal("postgres://app@db:x/reviews", options.ConnectionString);
    }

    [Fact]
    public void The_description_names_server_database_and_user_never_the_password()
    {
        Assert.Equal("db:6543/reviews as app", PgLlmConnectionString.Describe("postgres://app:hunter2@db:6543/reviews"));
        Assert.Equal("db:5432/(default database) as (default user)", PgLlmConnectionString.Describe("Host=db;Password=hunter2"));
    }

    private static IConfiguration Configuration(params (string Key, string Value)[] values) =>
        new ConfigurationBuilder().AddInMemoryCollection(values.Select(v => new KeyValuePair<string, string?>(v.Key, v.Value))).Build();
}
