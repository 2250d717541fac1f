"""The HTTP step: one request pinned to the probed address, checked for blocking.

The request goes to the address the earlier steps probed (the Host header and SNI stay the
target's name) by giving aiohttp a resolver that answers only that address. Redirects are
followed by hand, within the target's own host, so that an ISP's redirect to its blockpage
host is seen and fingerprinted rather than silently followed.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Mapping
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
    """A redirect that cannot be followed: a loop within the host, or a malformed Location."""


class _PinnedResolver(AbstractResolver):
    """Answers every lookup with the one address under test."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=self.address,
                port=port,
                family=self.family,
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


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


async def _fetch(session: aiohttp.ClientSession, url: str, cap: int) -> _Response:
    async with session.get(url, allow_redirects=False, headers=BROWSER_HEADERS) as resp:
        raw, truncated = await _read_capped(resp, cap)
        charset = resp.get_encoding() if resp.charset else "utf-8"
        try:
            body = raw.decode(charset, errors="replace")
        except LookupError:  # a charset name Python does not know
            body = raw.decode("utf-8", errors="replace")
        return _Response(
            url=url,
            status=resp.status,
            status_line=f"HTTP/{resp.version.major}.{resp.version.minor} {resp.status} "
            f"{resp.reason or ''}".rstrip(),
            headers={k.lower(): v for k, v in resp.headers.items()},
            body=body,
            body_bytes=len(raw),
            truncated=truncated,
        )


def _judge(resp: _Response, expect: HttpExpectations) -> tuple[Code, str]:
    fp = expect.blockpages.match(resp.status_line, resp.headers, resp.body)
    if fp is not None:
        origin = f" ({fp.country})" if fp.country else ""
        return Code.HTTP_BLOCKPAGE, f"blockpage {fp.name}{origin}"
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


def _same_host(url: str, host: str) -> bool:
    """True if `url` is http(s) on `host`; ValueError if it is malformed (a bad port too)."""
    parts = urlsplit(url)
    parts.port  # noqa: B018 - urlsplit checks the port only when asked
    return parts.scheme in ("http", "https") and (parts.hostname or "").lower() == host.lower()


async def _follow(
    session: aiohttp.ClientSession, url: str, host: str, cap: int
) -> tuple[_Response, str | None]:
    """GET `url`, following redirects within `host`: (last response, redirect elsewhere)."""
    resp = await _fetch(session, url, cap)
    for hops in range(MAX_REDIRECTS + 1):
        location = resp.headers.get("location")
        if resp.status not in REDIRECTS or not location:
            break
        try:
            target = urljoin(resp.url, location)
            same_host = _same_host(target, host)
        except ValueError as exc:
            raise RedirectError(f"malformed redirect {location[:100]!r}: {exc}") from None
        if not same_host:
            return resp, target
        if hops == MAX_REDIRECTS:
            raise RedirectError(f"more than {MAX_REDIRECTS} redirects")
        resp = await _fetch(session, target, cap)
    return resp, None


async def run(
    conn: Connection,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    expect: HttpExpectations,
) -> StepResult:
    """GET `url` from `conn`'s address, following redirects within the URL's host, and judge
    the answer against `expect` (blockpage fingerprints first)."""
    host = urlsplit(url).hostname or ""

    async def work() -> Outcome:
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(conn.address), ssl=ssl_context, force_close=True, limit=1
        )
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            started = time.perf_counter()
            resp, redirect = await _follow(session, url, host, expect.max_body)
            elapsed = time.perf_counter() - started
        code, detail = _judge(resp, expect)
        facts = HttpFacts(
            status=resp.status,
            body_bytes=resp.body_bytes,
            bytes_per_second=round(resp.body_bytes / elapsed, 1) if elapsed > 0 else None,
            truncated=resp.truncated,
            redirect=redirect,
        )
        return Outcome(code, detail, facts)

    return await measure(Step.HTTP, conn.endpoint, timeout, work)
