"""The HTTP step: one request pinned to the probed address, checked for blocking.

The request goes to the address the earlier steps probed (the Host header and SNI stay the
target's name) by giving aiohttp a resolver that answers only that address. Redirects are
followed by hand, a bounded number of times: within the target's host to the same address,
to another host through the caller's resolver (the test resolver, bogons refused). Every hop
is fingerprinted, so an ISP's redirect to its blockpage host is named.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from probes.blockpages import BlockpageMatcher
from probes.connection import Connection
from probes.errors import Outcome, measure
from probes.results import HttpFacts, StepResult
from probes.taxonomy import Code, Step

DEFAULT_MAX_BODY = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# An ordinary browser's request: the agent must not stand out on the wire (README: Risks).
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
}


class RedirectError(Exception):
    """A redirect that cannot be followed: too many hops, or a malformed Location."""


# Looks a host up for a cross-host redirect: the usable addresses (empty: not followed).
Resolve = Callable[[str], Awaitable[Sequence[str]]]
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.I | re.S)
# How much of a body is searched for a <meta> charset (browsers look at the first 1024).
_SNIFF_BYTES = 4096


class _PinnedResolver(AbstractResolver):
    """Answers each host with the address the probe chose for it, and nothing else."""

    def __init__(self, pinned: dict[str, str]) -> None:
        self.pinned = pinned

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.pinned[host.lower()]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class HttpExpectations:
    """What a genuine answer looks like. No `status` means any status below 400."""

    status: tuple[int, ...] = ()
    body: re.Pattern[str] | None = None
    blockpages: BlockpageMatcher = field(default_factory=BlockpageMatcher)
    max_body: int = DEFAULT_MAX_BODY


@dataclass(slots=True)
class _Response:
    url: str
    status: int
    status_line: str
    headers: Mapping[str, str]
    body: str
    body_bytes: int
    truncated: bool
    stalled: bool


def charset_of(resp: aiohttp.ClientResponse, raw: bytes) -> str:
    """The body's charset: the Content-Type header's, else a <meta> one (Russian ISP pages
    often declare windows-1251 only there), else UTF-8."""
    if resp.charset:
        return resp.charset
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


async def _read_capped(
    resp: aiohttp.ClientResponse, cap: int, deadline: float
) -> tuple[bytes, bool, bool]:
    """Read the body up to `cap` bytes: (bytes, truncated, stalled). A body still dripping
    at `deadline` is kept as it is, so that what arrived can still be fingerprinted."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in resp.content.iter_chunked(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    return b"".join(chunks)[:cap], True, False
    except TimeoutError:
        if not chunks:
            raise  # nothing arrived: an ordinary timeout
        return b"".join(chunks), False, True
    return b"".join(chunks), False, False


async def _fetch(session: aiohttp.ClientSession, url: str, cap: int, deadline: float) -> _Response:
    async with session.get(url, allow_redirects=False, headers=BROWSER_HEADERS) as resp:
        raw, truncated, stalled = await _read_capped(resp, cap, deadline)
        return _Response(
            url=url,
            status=resp.status,
            status_line=f"HTTP/{resp.version.major}.{resp.version.minor} {resp.status} "
            f"{resp.reason or ''}".rstrip(),
            headers={k.lower(): v for k, v in resp.headers.items()},
            body=decode(raw, charset_of(resp, raw)),
            body_bytes=len(raw),
            truncated=truncated,
            stalled=stalled,
        )


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


async def _follow(
    session: aiohttp.ClientSession,
    pinned: dict[str, str],
    url: str,
    expect: HttpExpectations,
    resolve: Resolve | None,
    deadline: float,
) -> _Hops:
    """GET `url` and follow redirects: within a host to its pinned address, to another host
    through `resolve` (no `resolve`: not followed). A hop that matches a blockpage
    fingerprint ends the chain: it has said what it had to."""
    hops = _Hops(await _fetch(session, url, expect.max_body, deadline), [url])
    for _ in range(MAX_REDIRECTS):
        target = _next_hop(hops.last)
        if target is None or _blockpage(hops.last, expect) is not None:
            return hops
        host = (urlsplit(target).hostname or "").lower()
        if host not in pinned:
            addresses = await resolve(host) if resolve is not None else ()
            if not addresses:
                hops.unresolved = target
                return hops
            pinned[host] = addresses[0]
        hops.urls.append(target)
        hops.last = await _fetch(session, target, expect.max_body, deadline)
    if _next_hop(hops.last) is not None and _blockpage(hops.last, expect) is None:
        raise RedirectError(f"more than {MAX_REDIRECTS} redirects")
    return hops


async def run(
    conn: Connection,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    expect: HttpExpectations,
    resolve: Resolve | None = None,
) -> StepResult:
    """GET `url` from `conn`'s address and judge the answer against `expect` (blockpage
    fingerprints first, on every hop). Redirects to another host are followed through
    `resolve`; without it they are reported and not followed."""
    host = (urlsplit(url).hostname or "").lower()

    async def work() -> Outcome:
        pinned = {host: conn.address}
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(pinned), ssl=ssl_context, force_close=True, limit=1
        )
        loop = asyncio.get_running_loop()
        # Stop reading a dripping body a little before the step's own timeout fires.
        deadline = loop.time() + timeout - max(0.1, timeout / 10)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            started = time.perf_counter()
            hops = await _follow(session, pinned, url, expect, resolve, deadline)
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
        )
        return Outcome(code, detail, facts)

    return await measure(Step.HTTP, conn.endpoint, timeout, work)
