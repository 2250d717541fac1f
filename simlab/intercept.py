"""A transparent intercepting proxy's box: accepts every connection and answers what it can.

In the lab the censor redirects all of a client's TCP to one listener (nft `redirect`), so
one port stands in for every address and port the client tries. Per connection, from the
client's first bytes (peeked, so that the TLS or HTTP server then reads them itself):

- a TLS ClientHello: the handshake completes with a certificate for the requested SNI issued
  on the fly by the box's own CA (which no client trusts), then the portal page is served;
- a plain HTTP request: the portal page (`PORTAL_BODY`, status 200), as a captive portal;
- anything else (MTProto, SSH, ...): accepted and left unanswered until the client closes,
  which is why a bare TCP connect proves nothing on such a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl

import trustme
from aiohttp import web

from simlab.net import bind_socket

PORTAL_BODY = (
    "<!doctype html><html><head><title>Network login</title></head><body>"
    "<h1>Welcome to GuestNet</h1><p>Sign in to use the internet.</p></body></html>\n"
)
TLS_HANDSHAKE = 0x16
_HTTP_REQUEST = re.compile(rb"^[A-Z]{3,7} ")
_PEEK = 8
_READ_LIMIT = 65536
# Certificates issued per server name, kept for reuse; a flood of names just starts over.
_MAX_NAMES = 256


class InterceptServer:
    """Intercept every TCP connection on `host:port` (see the module).

    `ca` issues the certificates; by default a fresh CA that exists only in this process, so
    that no client can trust it. `kinds` counts connections by what they turned out to be
    (`tls`, `http`, `other`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ca: trustme.CA | None = None):
        self.host = host
        self.port = port
        self.ca = ca or trustme.CA(organization_name="GuestNet interception CA")
        self.kinds: dict[str, int] = {"tls": 0, "http": 0, "other": 0}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._tls = self._context_for("intercept.invalid")
        self._tls.sni_callback = self._pick_certificate
        self._http: web.Server | None = None
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> InterceptServer:
        """Bind and start accepting; returns self."""
        self._http = web.Server(self._handle)  # binds to the running loop
        self._listener = bind_socket(self.host, self.port, socket.SOCK_STREAM)
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop(self._listener))
        return self

    async def close(self) -> None:
        """Stop accepting and end every connection."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        if self._http is not None:
            await self._http.shutdown(0.5)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            sock.setblocking(False)
            self._spawn(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert self._http is not None
        handed_over = False
        try:
            await _readable(sock)
            first = sock.recv(_PEEK, socket.MSG_PEEK)
            if not first:
                return
            if first[0] == TLS_HANDSHAKE:
                self.kinds["tls"] += 1
                await loop.connect_accepted_socket(self._http, sock, ssl=self._tls)
            elif _HTTP_REQUEST.match(first):
                self.kinds["http"] += 1
                await loop.connect_accepted_socket(self._http, sock)
            else:
                self.kinds["other"] += 1
                while await _readable(sock) and sock.recv(_READ_LIMIT):
                    pass
                return
            # From here on the aiohttp server owns the socket (and `close` ends it there).
            handed_over = True
        except OSError:
            pass  # a client that resets or fails the handshake is just gone
        finally:
            if not handed_over:
                sock.close()

    def _context_for(self, server_name: str) -> ssl.SSLContext:
        context = self._contexts.get(server_name)
        if context is None:
            if len(self._contexts) >= _MAX_NAMES:
                self._contexts.clear()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(server_name).configure_cert(context)
            self._contexts[server_name] = context
        return context

    def _pick_certificate(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if not server_name:
            return  # no SNI: the default certificate
        with contextlib.suppress(ValueError):  # a name no certificate can carry
            connection.context = self._context_for(server_name)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text=PORTAL_BODY, content_type="text/html")


async def _readable(sock: socket.socket) -> bool:
    """Wait until `sock` has data (or its peer's EOF) to read; True then."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(True))
    try:
        return await ready
    finally:
        loop.remove_reader(sock.fileno())


async def start_intercept(host: str = "127.0.0.1", port: int = 0) -> InterceptServer:
    """Start an intercepting box with its own CA; see `InterceptServer`."""
    return await InterceptServer(host, port).start()
