"""The HTTP step: a GET over the connection the earlier steps opened, checked for blocking.

The request travels on the TCP step's socket and, for https, inside the TLS step's session
(one handshake per probe, not two), parsed by h11, a sans-IO HTTP/1.1 implementation, so
that resets, EOF and silence still reach the classifier as themselves. The Host header and
SNI stay the target's name. Redirects are followed by hand on fresh connections, a bounded
number of times: within the target's host to the same address, to another host through the
caller's resolver (the test resolver, bogons refused). Every hop is fingerprinted, so an
ISP's redirect to its blockpage host is named.

What the step's duration and throughput measure: from the request's first byte to the end of
the (last hop's) body, with no connection set-up in it for the first hop.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urljoin, urlsplit

import h11

from probes import tcp, tls
from probes.blockpages import BlockpageMatcher
from probes.connection import Connection, Stream
from probes.errors import Outcome, PeerProtocolError, measure
from probes.errors import deadline as step_deadline
from probes.results import HttpFacts, StepResult
from probes.taxonomy import Code, Step

DEFAULT_MAX_BODY = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
SCHEME_PORTS = {"https": 443, "http": 80}
# An ordinary browser's request: the agent must not stand out on the wire (README: Risks).
BROWSER_HEADERS = (
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate"),
)
# The most header bytes accepted (h11 stops buffering an incomplete head past it too).
MAX_HEADER_BYTES = 32 * 1024


class RedirectError(Exception):
    """A redirect that cannot be followed: too many hops, or a malformed Location."""


# Looks a host up for a cross-host redirect: the usable addresses (empty: not followed).
Resolve = Callable[[str], Awaitable[Sequence[str]]]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.I | re.S)
# How much of a body is searched for a <meta> charset (browsers look at the first 1024).
_SNIFF_BYTES = 4096


@dataclass(frozen=True, slots=True)
class HttpExpectations:
    """What a genuine answer looks like. No `status` means any status below 400."""

    status: tuple[int, ...] = ()
    body: re.Pattern[str] | None = None
    blockpages: BlockpageMatcher = field(default_factory=BlockpageMatcher)
    max_body: int = DEFAULT_MAX_BODY
    # How much of the last hop's decoded body the facts keep (the measurement log's; 0: none).
    body_sample: int = 0


@dataclass(slots=True)
class _Response:
    url: str
    status: int
    status_line: str
    headers: Mapping[str, str]
    header_list: tuple[tuple[str, str], ...]
    body: str
    body_bytes: int
    truncated: bool
    stalled: bool


def charset_of(headers: Mapping[str, str], raw: bytes) -> str:
    """The body's charset: the Content-Type header's, else a <meta> one (Russian ISP pages
    often declare windows-1251 only there), else UTF-8."""
    declared = _HEADER_CHARSET.search(headers.get("content-type", ""))
    if declared:
        return declared.group(1)
    found = _META_CHARSET.search(raw[:_SNIFF_BYTES])
    return found.group(1).decode("ascii") if found else "utf-8"


def decode(raw: bytes, charset: str) -> str:
    """`raw` as text in `charset`, falling back to UTF-8 for names Python does not know."""
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def title_of(body: str) -> str | None:
    """The page's <title>, whitespace folded, at most 200 characters."""
    found = _TITLE.search(body[:65536])
    return " ".join(found.group(1).split())[:200] if found else None


def _decoder(encoding: str) -> zlib._Decompress | None:  # type: ignore[name-defined]
    """A streaming decoder for the body's Content-Encoding (we offer gzip and deflate)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


async def _next_event(conn: h11.Connection, stream: Stream) -> object:
    """The next h11 event, reading from `stream` as h11 asks for data."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.recv()
        conn.receive_data(data)
        if not data:
            try:
                return conn.next_event()
            except h11.RemoteProtocolError as exc:
                # The peer closed mid-response: an EOF, not a malformed answer.
                raise EOFError("connection closed before a complete response") from exc


async def _read_body(
    conn: h11.Connection, stream: Stream, encoding: str, cap: int, deadline: float
) -> tuple[bytes, bool, bool]:
    """The body, decoded, up to `cap` bytes: (bytes, truncated, stalled). A body still
    dripping at `deadline` is kept as it is, so that what arrived can be fingerprinted."""
    chunks: list[bytes] = []
    size = 0
    decoder = _decoder(encoding)
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                event = await _next_event(conn, stream)
                if not isinstance(event, h11.Data):
                    return b"".join(chunks), False, False
                data = bytes(event.data)
                if decoder is not None:
                    # Bounded inflation: a small compressed body cannot grow past the cap.
                    data = decoder.decompress(data, cap + 1 - size)
                chunks.append(data)
                size += len(data)
                if size > cap:
                    return b"".join(chunks)[:cap], True, False
    except TimeoutError:
        if not chunks:
            raise  # nothing arrived: an ordinary timeout
        return b"".join(chunks), False, True


def request_headers(netloc: str) -> list[tuple[str, str]]:
    """The headers of the GET the step sends to `netloc` (a URL's host[:port])."""
    return [("Host", netloc.rpartition("@")[2]), *BROWSER_HEADERS, ("Connection", "close")]


async def _exchange(
    stream: Stream, parts: SplitResult, url: str, cap: int, deadline: float
) -> _Response:
    """One GET of `url` over `stream`, with the response read and decoded."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    request = h11.Request(method="GET", target=target, headers=request_headers(parts.netloc))
    await stream.send(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    event = await _next_event(conn, stream)
    while isinstance(event, h11.InformationalResponse):
        event = await _next_event(conn, stream)
    if not isinstance(event, h11.Response):
        raise EOFError("connection closed before a response")
    if sum(len(k) + len(v) for k, v in event.headers) > MAX_HEADER_BYTES:
        raise PeerProtocolError(f"response headers larger than {MAX_HEADER_BYTES} bytes")
    header_list = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
    # The first of repeated headers counts, as OONI's fingerprint matching reads them (h11
    # already lowercases names).
    fields: dict[str, str] = {}
    for k, v in header_list:
        fields.setdefault(k, v)
    encoding = fields.get("content-encoding", "")
    raw, truncated, stalled = await _read_body(conn, stream, encoding, cap, deadline)
    version, reason = event.http_version.decode(), event.reason.decode("latin-1")
    return _Response(
        url=url,
        status=event.status_code,
        status_line=f"HTTP/{version} {event.status_code} {reason}".rstrip(),
        headers=fields,
        header_list=header_list,
        body=decode(raw, charset_of(fields, raw)),
        body_bytes=len(raw),
        truncated=truncated,
        stalled=stalled,
    )


async def _open(
    address: str, parts: SplitResult, ssl_context: ssl.SSLContext
) -> tuple[Connection, Stream]:
    """A fresh connection for a redirect hop (or a caller with none): TCP, and TLS with the
    URL's host as SNI for https."""
    conn = Connection(address, parts.port or SCHEME_PORTS[parts.scheme])
    try:
        await tcp.connect(conn)
        if parts.scheme == "https":
            assert conn.sock is not None
            conn.stream = await tls.start(conn.sock, ssl_context, parts.hostname or "")
    except BaseException:
        conn.close()
        raise
    assert conn.stream is not None
    return conn, conn.stream


def _blockpage(resp: _Response, expect: HttpExpectations) -> tuple[Code, str] | None:
    fp = expect.blockpages.match(resp.status_line, resp.headers, resp.body)
    if fp is None:
        return None
    origin = f" ({fp.country})" if fp.country else ""
    return Code.HTTP_BLOCKPAGE, f"blockpage {fp.name}{origin}"


def _judge(resp: _Response, expect: HttpExpectations) -> tuple[Code, str]:
    named = _blockpage(resp, expect)
    if named is not None:
        return named
    if resp.stalled:
        return Code.HTTP_TIMEOUT, f"body stalled after {resp.body_bytes} bytes"
    if expect.status:
        if resp.status not in expect.status:
            return Code.HTTP_STATUS_MISMATCH, (
                f"status {resp.status}, expected {list(expect.status)}"
            )
    elif resp.status >= 400:
        return Code.HTTP_STATUS_MISMATCH, f"status {resp.status}"
    if expect.body is not None and not expect.body.search(resp.body):
        return Code.HTTP_BODY_MISMATCH, f"body does not match /{expect.body.pattern}/"
    return Code.OK, f"status {resp.status}"


def _next_hop(resp: _Response) -> str | None:
    """Where a redirect points (absolute), or None for a final answer."""
    location = resp.headers.get("location")
    if resp.status not in REDIRECTS or not location:
        return None
    try:
        target = urljoin(resp.url, location)
        parts = urlsplit(target)
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as exc:
        raise RedirectError(f"malformed redirect {location[:100]!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RedirectError(f"redirect to a non-web URL {location[:100]!r}")
    return target


@dataclass(slots=True)
class _Hops:
    """The redirect chain as it is followed: the last response and every URL visited."""

    last: _Response
    urls: list[str]
    unresolved: str | None = None


@dataclass(slots=True)
class _Fetcher:
    """Fetches the hops of one step: the first on the probed connection, the rest fresh."""

    conn: Connection
    ssl_context: ssl.SSLContext
    expect: HttpExpectations
    resolve: Resolve | None
    deadline: float
    pinned: dict[str, str] = field(default_factory=dict)

    async def first(self, parts: SplitResult) -> _Response:
        url = parts.geturl()
        if self.conn.stream is None:  # a caller with no earlier steps: connect here
            hop, stream = await _open(self.conn.address, parts, self.ssl_context)
            self.conn.sock, self.conn.stream = hop.sock, stream
        assert self.conn.stream is not None
        return await _exchange(self.conn.stream, parts, url, self.expect.max_body, self.deadline)

    async def hop(self, url: str, address: str) -> _Response:
        parts = urlsplit(url)
        conn, stream = await _open(address, parts, self.ssl_context)
        try:
            return await _exchange(stream, parts, url, self.expect.max_body, self.deadline)
        finally:
            conn.close()

    async def follow(self, url: SplitResult) -> _Hops:
        """GET `url` and follow redirects: within a host to its pinned address, to another
        host through `resolve` (no `resolve`: not followed). A hop that matches a blockpage
        fingerprint ends the chain: it has said what it had to."""
        hops = _Hops(await self.first(url), [url.geturl()])
        for _ in range(MAX_REDIRECTS):
            target = _next_hop(hops.last)
            if target is None or _blockpage(hops.last, self.expect) is not None:
                return hops
            host = (urlsplit(target).hostname or "").lower()
            if host not in self.pinned:
                found = await self.resolve(host) if self.resolve is not None else ()
                if not found:
                    hops.unresolved = target
                    return hops
                self.pinned[host] = found[0]
            hops.urls.append(target)
            hops.last = await self.hop(target, self.pinned[host])
        if _next_hop(hops.last) is not None and _blockpage(hops.last, self.expect) is None:
            raise RedirectError(f"more than {MAX_REDIRECTS} redirects")
        return hops


async def run(
    conn: Connection,
    url: SplitResult | str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    expect: HttpExpectations,
    resolve: Resolve | None = None,
) -> StepResult:
    """GET `url` (parsed once, in the plan; text is parsed here) over `conn` (its stream
    from the earlier steps, or a connection of its own when it has none) and judge the answer
    against `expect`, blockpage fingerprints first, on every hop. Redirects to another host
    are followed through `resolve`; without it they are reported and not followed. `conn`
    stays the caller's to close."""
    if isinstance(url, str):  # a caller without a plan (a test, a tool)
        url = urlsplit(url)
    host = (url.hostname or "").lower()

    async def work() -> Outcome:
        until = step_deadline().reading_until
        fetcher = _Fetcher(conn, ssl_context, expect, resolve, until, {host: conn.address})
        started = time.perf_counter()
        hops = await fetcher.follow(url)
        elapsed = time.perf_counter() - started
        resp = hops.last
        code, detail = _judge(resp, expect)
        facts = HttpFacts(
            status=resp.status,
            body_bytes=resp.body_bytes,
            bytes_per_second=round(resp.body_bytes / elapsed, 1) if elapsed > 0 else None,
            truncated=resp.truncated,
            redirect=hops.unresolved,
            redirects=tuple(hops.urls[1:]),
            title=title_of(resp.body),
            headers=resp.header_list,
            body=resp.body[: expect.body_sample],
        )
        return Outcome(code, detail, facts)

    return await measure(Step.HTTP, conn.endpoint, timeout, work)
