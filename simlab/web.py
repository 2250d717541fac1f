"""HTTP and HTTPS servers (aiohttp) for the HTTP-stage outcomes, plus `start_web` for every mode.

HTTP modes, one per server:
- `valid`: 200 with `body` (`VALID_BODY` unless given);
- `blockpage`: 200 with an ISP-style page carrying Russian RKN markers (`BLOCKPAGE_BODY`);
- `status`: the `status` code (503 unless given) with a short body;
- `redirect`: 302 to `location` (`/final` unless given, i.e. the same host) for every path
  but `/final`, which serves the valid page (a `location` other than `/final` on the same
  host is an endless redirect);
- `throttle`: 200 with `throttle_bytes` of page trickled out at `rate` bytes per second, as a
  throttling censor slows a named service down without cutting it;
- `trickle`: a slowloris body: 200 announcing `TRICKLE_LENGTH` bytes, then one byte every
  `TRICKLE_PAUSE` seconds (for at most `TRICKLE_MAX` seconds);
- `drip`: the same, but the body starts with the blockpage (minus its closing tag) and then
  drips one byte every `DRIP_PAUSE` seconds, as a middlebox that holds a connection open does;
- `isp`: 200 with an ISP's own page (`ISP_BODY`): another title and length than the valid
  page and no known blockpage fingerprint, as an ISP serves for names it hijacks.
TLS problems come from the certificate the server is given (wrong name, untrusted CA), and
the raw modes (`reset`, `eof`, `silent`, `alert`) from `simlab.tcp`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque

from aiohttp import web

from simlab.net import bind_socket, format_hostport, serve_app
from simlab.tcp import HANDSHAKE_FAILURE, RAW_MODES, RawServer

HTTP_MODES = ("valid", "blockpage", "status", "redirect", "throttle", "trickle", "drip", "isp")
TRICKLE_LENGTH = 1 << 20
TRICKLE_PAUSE = 0.2
TRICKLE_MAX = 120.0
DRIP_PAUSE = 1.0
MODES = HTTP_MODES + RAW_MODES
VALID_BODY = "<!doctype html><title>ok</title><p>hello from the reachprobe test server</p>\n"
# Cyrillic is the point of this page, so RUF001 (ambiguous letters) does not apply.
BLOCKPAGE_BODY = (
    "<!doctype html><html lang=ru><title>Доступ ограничен</title>"
    "<h1>Доступ к информационному ресурсу ограничен</h1>"  # noqa: RUF001
    "<p>на основании Федерального закона от 27.07.2006 № 149-ФЗ. Реестр: "
    '<a href="http://eais.rkn.gov.ru/">eais.rkn.gov.ru</a></p></html>\n'
)
FINAL_PATH = "/final"
_THROTTLE_CHUNK = 1024
DRIP_HEAD = BLOCKPAGE_BODY.removesuffix("</html>\n").encode()
ISP_BODY = (
    "<!doctype html><html><head><title>Search results - HomeNet</title></head><body>"
    "<h1>HomeNet search</h1><p>We could not find that address. Were you looking for one of "
    "these?</p><ul><li>weather</li><li>news</li><li>maps</li></ul></body></html>\n"
)


class HttpServer:
    """One HTTP(S) server in one of `HTTP_MODES`; HTTPS when `ssl_context` is given.

    `requests` records `(method, Host header, path)` of recent requests; `delay` holds every
    answer back that long (so that many clients are mid-request at once).
    """

    def __init__(
        self,
        mode: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        body: str = VALID_BODY,
        status: int = 503,
        location: str = FINAL_PATH,
        rate: int = 16384,
        throttle_bytes: int = 32768,
        delay: float = 0.0,
    ) -> None:
        if mode not in HTTP_MODES:
            raise ValueError(f"unknown HTTP mode {mode!r}; expected one of {HTTP_MODES}")
        self.mode = mode
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.body = body
        self.status = status
        self.location = location
        self.rate = rate
        self.throttle_bytes = throttle_bytes
        self.delay = delay
        self.requests: deque[tuple[str, str, str]] = deque(maxlen=1000)
        self._runner: web.AppRunner | None = None

    def url(self, hostname: str | None = None, path: str = "/") -> str:
        """This server's URL, naming it `hostname` (a zone name) or by its address."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{format_hostport(hostname or self.host, self.port)}{path}"

    async def start(self) -> HttpServer:
        """Bind and start serving; returns self."""
        sock = bind_socket(self.host, self.port, socket.SOCK_STREAM)
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = await serve_app(app, sock, self.ssl_context)
        return self

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.host, request.path))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "throttle":
            pause = _THROTTLE_CHUNK / self.rate
            return await _drip(request, self.throttle_bytes, _THROTTLE_CHUNK, pause)
        if self.mode == "trickle":
            return await _drip(request, TRICKLE_LENGTH, 1, TRICKLE_PAUSE, TRICKLE_MAX)
        if self.mode == "drip":
            return await _drip(request, TRICKLE_LENGTH, 1, DRIP_PAUSE, TRICKLE_MAX, DRIP_HEAD)
        if self.mode == "blockpage":
            return web.Response(text=BLOCKPAGE_BODY, content_type="text/html")
        if self.mode == "isp":
            return web.Response(text=ISP_BODY, content_type="text/html")
        if self.mode == "status":
            return web.Response(status=self.status, text=f"status {self.status}\n")
        if self.mode == "redirect" and request.path != FINAL_PATH:
            raise web.HTTPFound(self.location)
        return web.Response(text=self.body, content_type="text/html")


async def _drip(
    request: web.Request,
    total: int,
    chunk: int,
    pause: float,
    limit: float | None = None,
    head: bytes = b"",
) -> web.StreamResponse:
    """A 200 announcing `head` and `total` bytes: `head` at once, then `chunk` bytes every
    `pause` seconds (for at most `limit` seconds, when given: a slowloris body then never
    completes)."""
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.content_length = len(head) + total
    await response.prepare(request)
    steps = range(0, total, chunk)
    if limit is not None:
        steps = steps[: int(limit / pause)]
    try:
        if head:
            await response.write(head)
        for sent in steps:
            await response.write(b"x" * min(chunk, total - sent))
            await asyncio.sleep(pause)
        if limit is None:
            await response.write_eof()
    except ConnectionError:
        pass  # the client gave up, as it should
    return response


async def start_web(
    mode: str,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    *,
    body: str = VALID_BODY,
    status: int = 503,
    location: str = FINAL_PATH,
    alert: int = HANDSHAKE_FAILURE,
    delay: float = 0.0,
) -> HttpServer | RawServer:
    """Start a server in any of `MODES` (raw modes ignore the HTTP options and `ssl_context`)."""
    if mode in RAW_MODES:
        return await RawServer(mode, host, port, alert).start()
    server = HttpServer(
        mode, host, port, ssl_context, body=body, status=status, location=location, delay=delay
    )
    return await server.start()
