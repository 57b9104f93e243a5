using System.Globalization;
using Npgsql;

namespace PgLlm.Hosting;

/// <summary>
/// Reads a PostgreSQL connection string in either form: Npgsql's keywords (<c>Host=db;Database=app;Username=app</c>)
/// or a URL as libpq and most hosting providers write it (<c>postgres://user:password@host:5432/app?sslmode=require</c>,
/// also <c>postgresql://</c>). <see cref="PgLlmServiceCollectionExtensions.Bind"/> applies it to
/// <c>PgLlm:ConnectionString</c> and <c>PGLLM_CONNECTION</c>.
/// </summary>
public static class PgLlmConnectionString
{
    private const string Expected = "expected postgres://user:password@host:port/database";

    /// <summary>libpq's URL parameters and the Npgsql keywords they become; other names are passed to Npgsql as they are.</summary>
    private static readonly Dictionary<string, string> Parameters = new(StringComparer.OrdinalIgnoreCase)
    {
        ["sslmode"] = "SSL Mode",
        ["connect_timeout"] = "Timeout",
        ["application_name"] = "Application Name",
        ["options"] = "Options",
        ["sslcert"] = "SSL Certificate",
        ["sslkey"] = "SSL Key",
        ["sslrootcert"] = "Root Certificate",
        ["sslpassword"] = "SSL Password",
        ["target_session_attrs"] = "Target Session Attributes",
        ["passfile"] = "Passfile",
        ["client_encoding"] = "Client Encoding",
        ["gssencmode"] = "GSS Encryption Mode",
        ["host"] = "Host",
        ["hostaddr"] = "Host",
        ["port"] = "Port",
        ["dbname"] = "Database",
        ["user"] = "Username",
        ["password"] = "Password",
    };

    /// <summary>Whether <paramref name="value"/> is written as a <c>postgres://</c> or <c>postgresql://</c> URL.</summary>
    public static bool IsUrl(string? value) =>
        value is not null
        && (value.TrimStart().StartsWith("postgres://", StringComparison.OrdinalIgnoreCase)
            || value.TrimStart().StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The connection string in Npgsql's keyword form: a URL converted, keywords checked and returned as given.
    /// </summary>
    /// <exception cref="PgLlmConfigurationException">
    /// The value is empty or cannot be read; the message says why in one line and never contains the password.
    /// </exception>
    public static string ToNpgsql(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new PgLlmConfigurationException("PgLlm needs a connection string: set PGLLM_CONNECTION or PgLlm:ConnectionString (Host=...;Database=...;Username=... or postgres://user:password@host:port/database).");
        }

        if (IsUrl(value))
        {
            return FromUrl(value.Trim());
        }

        try
        {
            _ = new NpgsqlConnectionStringBuilder(value);
            return value;
        }
        catch (ArgumentException ex)
        {
            throw new PgLlmConfigurationException($"The connection string (PGLLM_CONNECTION or PgLlm:ConnectionString) is not valid: {FirstLine(ex.Message)} (expected Host=...;Database=...;Username=... or postgres://user:password@host:port/database).", ex);
        }
    }

    /// <summary>
    /// <see cref="ToNpgsql"/> when the value can be read; otherwise the value unchanged (it is reported when the
    /// connection is made). Null stays null.
    /// </summary>
    public static string? TryToNpgsql(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            return value;
        }

        try
        {
            return ToNpgsql(value);
        }
        catch (PgLlmConfigurationException)
        {
            return value;
        }
    }

    /// <summary>The server and login a connection string names, without its password: <c>host:port/database as user</c>.</summary>
    public static string Describe(string? connectionString)
    {
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(TryToNpgsql(connectionString));
            var host = string.IsNullOrEmpty(builder.Host) ? "localhost" : builder.Host;
            var target = host.Contains(':', StringComparison.Ordinal) || host.Contains(',', StringComparison.Ordinal) || host.StartsWith('/')
                ? host
                : string.Create(CultureInfo.InvariantCulture, $"{host}:{builder.Port}");
            var database = string.IsNullOrEmpty(builder.Database) ? "(default database)" : builder.Database;
            var user = string.IsNullOrEmpty(builder.Username) ? "(default user)" : builder.Username;
            return $"{target}/{database} as {user}";
        }
        catch (ArgumentException)
        {
            return "(unreadable connection string)";
        }
    }

    private static string FromUrl(string url)
    {
        var rest = url[(url.IndexOf("://", StringComparison.Ordinal) + 3)..];
        rest = Cut(rest, '#', out _);
        rest = Cut(rest, '?', out var query);
        rest = Cut(rest, '/', out var path);
        var builder = new NpgsqlConnectionStringBuilder();
        var at = rest.LastIndexOf('@');
        if (at >= 0)
        {
            SetUserInfo(builder, rest[..at]);
            rest = rest[(at + 1)..];
        }

        SetHosts(builder, rest);
        if (!string.IsNullOrEmpty(path))
        {
            builder.Database = Decode(path);
        }

        if (!string.IsNullOrEmpty(query))
        {
            SetQuery(builder, query);
        }

        if (string.IsNullOrEmpty(builder.Host))
        {
            builder.Host = "localhost";
        }

        return builder.ConnectionString;
    }

    /// <summary>The part of <paramref name="text"/> before the first <paramref name="separator"/>, and what follows it (null without one).</summary>
    private static string Cut(string text, char separator, out string? after)
    {
        var at = text.IndexOf(separator, StringComparison.Ordinal);
        after = at >= 0 ? text[(at + 1)..] : null;
        return at >= 0 ? text[..at] : text;
    }

    /// <summary><c>user</c>, <c>user:password</c> or <c>:password</c>, percent-decoded.</summary>
    private static void SetUserInfo(NpgsqlConnectionStringBuilder builder, string userInfo)
    {
        var colon = userInfo.IndexOf(':', StringComparison.Ordinal);
        var user = Decode(colon < 0 ? userInfo : userInfo[..colon]);
        if (user.Length > 0)
        {
            builder.Username = user;
        }

        if (colon >= 0)
        {
            builder.Password = Decode(userInfo[(colon + 1)..]);
        }
    }

    /// <summary>The URL's <c>name=value&amp;...</c> parameters, each a connection string keyword.</summary>
    private static void SetQuery(NpgsqlConnectionStringBuilder builder, string query)
    {
        foreach (var pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = pair.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw Invalid($"the parameter '{Decode(pair)}' has no value");
            }

            SetParameter(builder, Decode(pair[..equals]), Decode(pair[(equals + 1)..]));
        }
    }

    /// <summary>One host (<c>host</c>, <c>host:port</c>, <c>[::1]:port</c>) or several separated by commas.</summary>
    private static void SetHosts(NpgsqlConnectionStringBuilder builder, string hostList)
    {
        if (hostList.Length == 0)
        {
            return;
        }

        var hosts = new List<(string Host, int? Port)>();
        foreach (var entry in hostList.Split(','))
        {
            string host;
            string? port = null;
            if (entry.StartsWith('['))
            {
                var close = entry.IndexOf(']', StringComparison.Ordinal);
                if (close < 0)
                {
                    throw Invalid("an IPv6 host lacks its closing ']'");
                }

                host = entry[1..close];
                if (close + 1 < entry.Length)
                {
                    if (entry[close + 1] != ':')
                    {
                        throw Invalid("unexpected text after an IPv6 host");
                    }

                    port = entry[(close + 2)..];
                }
            }
            else
            {
                var colon = entry.LastIndexOf(':');
                host = Decode(colon < 0 ? entry : entry[..colon]);
                port = colon < 0 ? null : entry[(colon + 1)..];
            }

            hosts.Add((host, port is null or "" ? null : ParsePort(port)));
        }

        if (hosts.Count == 1)
        {
            if (hosts[0].Host.Length > 0)
            {
                builder.Host = hosts[0].Host;
            }

            if (hosts[0].Port is { } single)
            {
                builder.Port = single;
            }

            return;
        }

        builder.Host = string.Join(',', hosts.Select(h => h.Port is { } p ? string.Create(CultureInfo.InvariantCulture, $"{Bracket(h.Host)}:{p}") : Bracket(h.Host)));
    }

    private static string Bracket(string host) => host.Contains(':', StringComparison.Ordinal) ? "[" + host + "]" : host;

    private static int ParsePort(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536
            ? port
            : throw Invalid($"the port '{text}' is not a number from 1 to 65535");

    private static void SetParameter(NpgsqlConnectionStringBuilder builder, string name, string value)
    {
        var keyword = Parameters.GetValueOrDefault(name) ?? name;
        if (keyword == "SSL Mode" || keyword == "GSS Encryption Mode")
        {
            // libpq writes verify-full, Npgsql VerifyFull.
            value = value.Replace("-", string.Empty, StringComparison.Ordinal);
        }

        if (keyword == "Port")
        {
            builder.Port = ParsePort(value);
            return;
        }

        try
        {
            builder[keyword] = value;
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException or OverflowException)
        {
            throw Invalid(keyword == "Password" || keyword == "SSL Password"
                ? $"the parameter '{name}' is not valid"
                : $"the parameter '{name}={value}' is not valid ({FirstLine(ex.Message)})");
        }
    }

    /// <summary>Percent-decodes a part of the URL; an invalid escape is kept as written, as libpq does.</summary>
    private static string Decode(string text) => Uri.UnescapeDataString(text);

    private static PgLlmConfigurationException Invalid(string why) =>
        new($"The connection URL (PGLLM_CONNECTION or PgLlm:ConnectionString) is not valid: {why} ({Expected}, password and names percent-encoded).");

    private static string FirstLine(string message)
    {
        var end = message.IndexOfAny(['\r', '\n']);
        return (end < 0 ? message : message[..end]).TrimEnd('.');
    }
}
