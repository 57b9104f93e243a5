using System.Globalization;

namespace PgLlm.Local;

/// <summary>Who the current process runs as (without P/Invoke).</summary>
internal static class ProcessIdentity
{
    private static readonly Lazy<bool> IsRootLazy = new(DetectRoot);

    /// <summary>True when the effective user id is 0 (PostgreSQL refuses to run as root).</summary>
    public static bool IsRoot => IsRootLazy.Value;

    /// <summary>True when <paramref name="userName"/> exists in <c>/etc/passwd</c>.</summary>
    public static bool UserExists(string userName)
    {
        const string passwd = "/etc/passwd";
        if (!File.Exists(passwd))
        {
            return false;
        }

        try
        {
            return File.ReadLines(passwd).Any(line => line.StartsWith(userName + ":", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool DetectRoot()
    {
        if (OperatingSystem.IsWindows())
        {
            return false;
        }

        // /proc/self/status has "Uid:\t<real>\t<effective>\t<saved>\t<fs>".
        const string status = "/proc/self/status";
        try
        {
            if (File.Exists(status))
            {
                foreach (var line in File.ReadLines(status))
                {
                    if (!line.StartsWith("Uid:", StringComparison.Ordinal))
                    {
                        continue;
                    }

                    var fields = line["Uid:".Length..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                    if (fields.Length >= 2 && int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var effectiveUid))
                    {
                        return effectiveUid == 0;
                    }
                }
            }
        }
        catch (IOException)
        {
            // Fall back to the user name.
        }

        return string.Equals(Environment.UserName, "root", StringComparison.Ordinal);
    }
}
