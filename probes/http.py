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
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urljoin, urlsplit

import h11

from probes import tcp, tls
from probes.blockpages import BlockpageMatcher
from probes.browser import request_headers
from probes.connection import Connection, Stream
from probes.errors import Outcome, PeerProtocolError, measure
from probes.errors import deadline as step_deadline
from probes.results import HttpFacts, StepResult
from probes.taxonomy import Code, Step
from probes.transfer import Transfer

DEFAULT_MAX_BODY = 1 << 20
# The volume probe's default (`min_bytes: true`): four times the ~16 KB after which
# data-volume freezes cut connections (Russia, 2024-), so a freeze cannot hide under it.
DEFAULT_VOLUME_BYTES = 64 * 1024
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
SCHEME_PORTS = {"https": 443, "http": 80}
# A response cut by the deadline after this much silence stalled; one that was still
# getting data more recently than that was slow (issue 22). TCP's own retransmission
# timeouts (1 s and up) sit inside it, so a lossy but moving path is not a freeze.
STALL_SECONDS = 2.0
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
    """What a genuine answer looks like. No `status` means any status below 400.

    `min_bytes` makes the step a volume probe: the response is read until that many bytes
    came off the wire (a freeze counts the server's bytes, compressed or not), asked for with
    a Range header when `ranged`."""

    status: tuple[int, ...] = ()
    body: re.Pattern[str] | None = None
    blockpages: BlockpageMatcher = field(default_factory=BlockpageMatcher)
    max_body: int = DEFAULT_MAX_BODY
    min_bytes: int | None = None
    ranged: bool = False
    # How much of the last hop's decoded body the facts keep (the measurement log's; 0: none).
    body_sample: int = 0


@dataclass(slots=True)
class _Response:
    """One hop's answer. `cut`: the deadline came first; `status` is None when it came
    before the response head was complete (bytes had arrived: else it is a plain timeout)."""

    url: str
    status: int | None
    status_line: str
    headers: Mapping[str, str]
    header_list: tuple[tuple[str, str], ...]
    body: str
    body_bytes: int
    truncated: bool
    cut: bool
    transfer: Transfer


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
    conn: h11.Connection,
    stream: Stream,
    encoding: str,
    expect: HttpExpectations,
    chunks: list[bytes],
) -> bool:
    """The body, decoded, into `chunks`, up to `expect.max_body` bytes (and, for a volume
    probe, until `expect.min_bytes` came off the wire); whether it was cut short there.
    What arrived stays in `chunks` if the caller's deadline cuts it short."""
    size = 0
    cap = expect.max_body
    decoder = _decoder(encoding)
    transfer = stream.transfer
    while True:
        if expect.min_bytes and transfer is not None and transfer.received >= expect.min_bytes:
            return True
        event = await _next_event(conn, stream)
        if not isinstance(event, h11.Data):
            return False
        data = bytes(event.data)
        if decoder is not None:
            # Bounded inflation: a small compressed body cannot grow past the cap.
            data = decoder.decompress(data, cap + 1 - size)
        chunks.append(data)
        size += len(data)
        if size > cap:
            return True


async def _exchange(
    stream: Stream, parts: SplitResult, url: str, expect: HttpExpectations, deadline: float
) -> _Response:
    """One GET of `url` over `stream`, with the response read and decoded. The head and the
    body are read under `deadline` and every read is counted: a response the deadline cuts
    is kept as far as it came (to be fingerprinted, and told stalled from slow); one of which
    not a byte arrived is an ordinary timeout."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    headers = request_headers(parts.netloc.rpartition("@")[2])
    if expect.ranged and expect.min_bytes:
        headers.append(("Range", f"bytes=0-{expect.min_bytes - 1}"))
    request = h11.Request(method="GET", target=target, headers=headers)
    transfer = stream.meter(asyncio.get_running_loop().time())
    await stream.send(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    head: h11.Response | None = None
    chunks: list[bytes] = []
    truncated = cut = False
    try:
        async with asyncio.timeout_at(deadline):
            head = await _head(conn, stream)
            encoding = _fields(head).get("content-encoding", "")
            truncated = await _read_body(conn, stream, encoding, expect, chunks)
    except TimeoutError:
        if not transfer.received:
            raise  # nothing arrived: an ordinary timeout
        cut = True
    raw = b"".join(chunks)[: expect.max_body]
    fields = _fields(head) if head is not None else {}
    status_line = ""
    if head is not None:
        version, reason = head.http_version.decode(), head.reason.decode("latin-1")
        status_line = f"HTTP/{version} {head.status_code} {reason}".rstrip()
    return _Response(
        url=url,
        status=head.status_code if head is not None else None,
        status_line=status_line,
        headers=fields,
        header_list=()
        if head is None
        else tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
        body=decode(raw, charset_of(fields, raw)),
        body_bytes=len(raw),
        truncated=truncated,
        cut=cut,
        transfer=transfer,
    )


async def _head(conn: h11.Connection, stream: Stream) -> h11.Response:
    """The response head (informational responses skipped), its size bounded."""
    event = await _next_event(conn, stream)
    while isinstance(event, h11.InformationalResponse):
        event = await _next_event(conn, stream)
    if not isinstance(event, h11.Response):
        raise EOFError("connection closed before a response")
    if sum(len(k) + len(v) for k, v in event.headers) > MAX_HEADER_BYTES:
        raise PeerProtocolError(f"response headers larger than {MAX_HEADER_BYTES} bytes")
    return event


def _fields(head: h11.Response) -> dict[str, str]:
    """The head's fields by name. The first of repeated headers counts, as OONI's
    fingerprint matching reads them (h11 already lowercases names)."""
    fields: dict[str, str] = {}
    for k, v in head.headers:
        fields.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    return fields


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


def stall_seconds(timeout: float) -> float:
    """The silence after which a cut transfer counts as stalled, under a step `timeout`:
    `STALL_SECONDS`, or a quarter of a shorter timeout."""
    return min(STALL_SECONDS, timeout / 4)


def _blockpage(resp: _Response, expect: HttpExpectations) -> tuple[Code, str] | None:
    fp = expect.blockpages.match(resp.status_line, resp.headers, resp.body)
    if fp is None:
        return None
    origin = f" ({fp.country})" if fp.country else ""
    return Code.HTTP_BLOCKPAGE, f"blockpage {fp.name}{origin}"


def _judge(
    resp: _Response, expect: HttpExpectations, now: float, stall_after: float
) -> tuple[Code, str]:
    named = _blockpage(resp, expect)
    if named is not None:
        return named
    if resp.cut:
        # Stalled: a freeze or a dead path, evidence like any timeout. Still arriving: slow
        # or throttled, which one vantage cannot tell from a slow server (docs/taxonomy.md).
        slow = not resp.transfer.stalled(now, stall_after)
        return (Code.HTTP_SLOW if slow else Code.HTTP_TIMEOUT), resp.transfer.describe_cut(
            now, stall_after
        )
    assert resp.status is not None  # only a cut response lacks a head
    if expect.status:
        if resp.status not in expect.status:
            return Code.HTTP_STATUS_MISMATCH, (
                f"status {resp.status}, expected {list(expect.status)}"
            )
    elif resp.status >= 400:
        return Code.HTTP_STATUS_MISMATCH, f"status {resp.status}"
    if expect.body is not None and not expect.body.search(resp.body):
        return Code.HTTP_BODY_MISMATCH, f"body does not match /{expect.body.pattern}/"
    return Code.OK, f"status {resp.status}" + _volume_note(resp, expect)


def _volume_note(resp: _Response, expect: HttpExpectations) -> str:
    """What a volume probe moved: enough, or an object too small to show a freeze."""
    if expect.min_bytes is None:
        return ""
    if resp.transfer.received >= expect.min_bytes:
        return f", {resp.transfer.received} bytes received (volume probe)"
    return f", but the object ended after {resp.transfer.received} of min_bytes {expect.min_bytes}"


def _next_hop(resp: _Response) -> str | None:
    """Where a redirect points (absolute), or None for a final answer."""
    location = resp.headers.get("location")
    if resp.cut or resp.status not in REDIRECTS or not location:
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
        return await _exchange(self.conn.stream, parts, url, self.expect, self.deadline)

    async def hop(self, url: str, address: str) -> _Response:
        parts = urlsplit(url)
        conn, stream = await _open(address, parts, self.ssl_context)
        try:
            return await _exchange(stream, parts, url, self.expect, self.deadline)
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
        loop = asyncio.get_running_loop()
        until = step_deadline().reading_until
        fetcher = _Fetcher(conn, ssl_context, expect, resolve, until, {host: conn.address})
        started = loop.time()
        hops = await fetcher.follow(url)
        now = loop.time()
        resp = hops.last
        code, detail = _judge(resp, expect, now, stall_seconds(timeout))
        elapsed = now - started
        transfer = resp.transfer
        ttfb, gap = transfer.time_to_first_byte(), transfer.gap(now, resp.cut)
        facts = HttpFacts(
            status=resp.status,
            body_bytes=resp.body_bytes,
            bytes_per_second=(
                round(resp.body_bytes / elapsed, 1) if elapsed > 0 and resp.body_bytes else None
            ),
            truncated=resp.truncated,
            redirect=hops.unresolved,
            redirects=tuple(hops.urls[1:]),
            title=title_of(resp.body),
            headers=resp.header_list,
            body=resp.body[: expect.body_sample],
            received_bytes=transfer.received,
            tls_records=transfer.records,
            first_byte_seconds=None if ttfb is None else round(ttfb, 6),
            longest_gap_seconds=None if gap is None else round(gap, 6),
        )
        return Outcome(code, detail, facts)

    return await measure(Step.HTTP, conn.endpoint, timeout, work)
