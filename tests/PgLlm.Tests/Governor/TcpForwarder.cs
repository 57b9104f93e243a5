using System.Net;
using System.Net.Sockets;

namespace PgLlm.Tests.Governor;

/// <summary>
/// A loopback port forwarded to a model server, which a test takes down (the port refuses connections and open
/// connections are cut) and brings back up on the same port: an endpoint outage without touching the server.
/// </summary>
internal sealed class TcpForwarder : IAsyncDisposable
{
    private readonly IPEndPoint _target;
    private readonly List<TcpClient> _open = [];
    private TcpListener? _listener;
    private CancellationTokenSource _cancellation = new();
    private Task _accepting = Task.CompletedTask;

    private TcpForwarder(IPEndPoint target) => _target = target;

    public int Port { get; private set; }

    /// <summary>The base URL of the forwarded server at the forwarder's port.</summary>
    public Uri BaseUrlFor(Uri target) => new UriBuilder(target) { Port = Port }.Uri;

    public static TcpForwarder Start(Uri target)
    {
        var forwarder = new TcpForwarder(new IPEndPoint(IPAddress.Loopback, target.Port));
        forwarder.Up();
        return forwarder;
    }

    /// <summary>Listens (again, on the same port) and forwards.</summary>
    public void Up()
    {
        _cancellation = new CancellationTokenSource();
        var listener = new TcpListener(IPAddress.Loopback, Port);
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Start();
        Port = ((IPEndPoint)listener.LocalEndpoint).Port;
        _listener = listener;
        var token = _cancellation.Token;
        _accepting = Task.Run(() => AcceptAsync(listener, token), CancellationToken.None);
    }

    /// <summary>Stops listening (connections are refused) and cuts every open connection.</summary>
    public async Task DownAsync()
    {
        await _cancellation.CancelAsync();
        _listener?.Stop();
        _listener = null;
        lock (_open)
        {
            foreach (var client in _open)
            {
                client.Dispose();
            }

            _open.Clear();
        }

        await _accepting;
    }

    public async ValueTask DisposeAsync()
    {
        await DownAsync();
        _cancellation.Dispose();
    }

    private async Task AcceptAsync(TcpListener listener, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            TcpClient inbound;
            try
            {
                inbound = await listener.AcceptTcpClientAsync(token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => PipeAsync(inbound, token), CancellationToken.None);
        }
    }

    private async Task PipeAsync(TcpClient inbound, CancellationToken token)
    {
        var outbound = new TcpClient();
        lock (_open)
        {
            _open.Add(inbound);
            _open.Add(outbound);
        }

        try
        {
            await outbound.ConnectAsync(_target, token);
            var a = inbound.GetStream();
            var b = outbound.GetStream();
            await Task.WhenAny(a.CopyToAsync(b, token), b.CopyToAsync(a, token));
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            inbound.Dispose();
            outbound.Dispose();
            lock (_open)
            {
                _open.Remove(inbound);
                _open.Remove(outbound);
            }
        }
    }
}
