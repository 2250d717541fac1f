"""Socket helpers shared by the servers: listen-address parsing, binding, a closed port."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Self

from aiohttp import web

# Connections the kernel completes before a server accepts them (see StreamServer.start).
LISTEN_BACKLOG = 4096


def parse_listen(text: str) -> tuple[str, int]:
    """Split `ADDR:PORT` or `[V6ADDR]:PORT` into a literal address and a port.

    Only IP literals are accepted: the servers must never touch a resolver to bind.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)
    return host, int(port)


def family_of(host: str) -> socket.AddressFamily:
    """The address family of an IP literal."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def bind_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A bound (not yet listening) non-blocking socket; port 0 picks an ephemeral port."""
    family = family_of(host)
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            # `[::]` means IPv6 only, so that a `0.0.0.0` listener on the same port can be
            # beside it (the lab's dual-stack web namespace runs both).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            # Restarting a lab server must not wait for TIME_WAIT to expire.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def closed_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or `kind`) port on `host` that nothing listens on (bound, then released).

    Another process could grab it in between; on loopback in a test run that is rare enough.
    """
    with socket.socket(family_of(host), kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def format_hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class StreamServer:
    """An asyncio TCP server that counts connections and ends the open ones on `close()`.

    Python 3.11's `Server.close()` leaves accepted connections open, and a server that
    never answers would keep its clients (and the test) hanging.
    """

    def __init__(self, handler: StreamHandler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = asyncio.Condition()
        self.connections = 0

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on an already bound socket."""
        # A deep accept queue: asyncio's default of 100 overflows when a prefix sweep's
        # connects (closed at once by the client) arrive faster than Python accepts them, and
        # the kernel then drops SYNs, which looks exactly like a blackhole.
        self._server = await asyncio.start_server(
            self._accept, sock=sock, ssl=ssl_context, backlog=LISTEN_BACKLOG
        )

    async def wait_connections(self, count: int) -> None:
        """Return once `count` connections have been accepted in all (bound it with a timeout)."""
        async with self._accepted:
            await self._accepted.wait_for(lambda: self.connections >= count)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._accepted:
            self.connections += 1
            self._accepted.notify_all()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            # Report a handler bug through the loop (tests watch its exception handler) at
            # once: an unretrieved task exception would only be logged whenever GC runs.
            asyncio.get_running_loop().call_exception_handler(
                {"message": "stream handler failed", "exception": exc}
            )
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class TcpService:
    """A TCP server on `host:port` (port 0 picks one) whose subclass's `_serve` talks to clients."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server = StreamServer(self._serve)

    @property
    def connections(self) -> int:
        """How many connections this server has accepted."""
        return self._server.connections

    async def wait_connections(self, count: int) -> None:
        """Return once `count` connections have been accepted in all (call on the server's loop)."""
        await self._server.wait_connections(count)

    async def start(self) -> Self:
        """Bind and start serving; returns self."""
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM)
        self.port = sock.getsockname()[1]
        await self._server.start(sock)
        return self

    async def close(self) -> None:
        """Stop serving and end open connections."""
        await self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def serve_app(
    app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Serve an aiohttp app on a bound socket; `await runner.cleanup()` stops it."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner
