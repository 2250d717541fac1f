"""An RFC 8484 DNS-over-HTTPS server (GET and POST `application/dns-message`) over a `Zone`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import ssl
from collections import deque

import dns.rdatatype
from aiohttp import web

from simlab.dns import encode, parse_query
from simlab.net import bind_socket, format_hostport, serve_app
from simlab.zone import Zone

CONTENT_TYPE = "application/dns-message"
# A `silent` name holds its request at most this long, so that a client without a timeout
# cannot keep a server from shutting down forever.
_SILENT_HOLD_SECONDS = 30.0


def decode_get_param(value: str) -> bytes:
    """The DNS message in a GET request's `dns` parameter (base64url without padding)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class DohServer:
    """Serve `zone` over DoH at `https://host:port/dns-query` (HTTP if `ssl_context` is None)."""

    def __init__(
        self,
        zone: Zone,
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/dns-query",
    ) -> None:
        self.zone = zone
        self.host = host
        self.port = port
        self.path = path
        self.queries: deque[tuple[str, str, str]] = deque(maxlen=1000)
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        """The DoH endpoint URL (what the agent's `resolvers.*.url` takes)."""
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{format_hostport(self.host, self.port)}{self.path}"

    async def start(self) -> DohServer:
        """Bind and start serving; returns self."""
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM)
        self.port = sock.getsockname()[1]
        app = web.Application(client_max_size=65535)
        app.router.add_route("GET", self.path, self._handle)
        app.router.add_route("POST", self.path, self._handle)
        self._runner = await serve_app(app, sock, self._ssl_context)
        return self

    async def close(self) -> None:
        """Release held `silent` requests and stop serving."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        wire = await _request_wire(request)
        query = parse_query(wire)
        if query is None:
            raise web.HTTPBadRequest(text="not a DNS query")
        if query.question:
            question = query.question[0]
            self.queries.append(
                ("doh", question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
            )
        replies = self.zone.replies(query, datagram=False)
        if not replies:
            # A silent name: hold the request until the client gives up or we shut down.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _SILENT_HOLD_SECONDS)
            raise web.HTTPServiceUnavailable()
        return web.Response(
            body=encode(replies[0].message, 65535),
            content_type=CONTENT_TYPE,
            headers={"Cache-Control": "max-age=0"},
        )


async def _request_wire(request: web.Request) -> bytes:
    """The DNS message a DoH request carries, or an HTTP error response."""
    if request.method == "GET":
        try:
            return decode_get_param(request.query["dns"])
        except (KeyError, binascii.Error, ValueError) as exc:
            raise web.HTTPBadRequest(text="missing or bad dns parameter") from exc
    if request.content_type != CONTENT_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"expected {CONTENT_TYPE}")
    return await request.read()


async def start_doh(
    zone: Zone, ssl_context: ssl.SSLContext | None, host: str = "127.0.0.1", port: int = 0
) -> DohServer:
    """Start a DoH server for `zone`; see `DohServer`."""
    return await DohServer(zone, ssl_context, host, port).start()
