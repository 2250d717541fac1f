"""The HTTP step: one request pinned to the probed address, checked for blocking.

The request goes to the address the earlier steps probed (the Host header and SNI stay the
target's name) by giving aiohttp a resolver that answers only that address. Redirects are
followed by hand, within the target's own host, so that an ISP's redirect to its blockpage
host is seen and fingerprinted rather than silently followed.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from probes.blockpages import BlockpageMatcher
from probes.errors import classify
from probes.results import StepResult, format_endpoint
from probes.taxonomy import OK, Step

DEFAULT_MAX_BODY = 1 << 20
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# An ordinary browser's request: the agent must not stand out on the wire (DESIGN: safety).
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


@dataclass(slots=True)
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


def _judge(resp: _Response, expect: HttpExpectations) -> tuple[str, str]:
    fp = expect.blockpages.match(resp.status_line, resp.headers, resp.body)
    if fp is not None:
        origin = f" ({fp.country})" if fp.country else ""
        return "http_blockpage", f"blockpage {fp.name}{origin}"
    if expect.status:
        if resp.status not in expect.status:
            return "http_status_mismatch", f"status {resp.status}, expected {list(expect.status)}"
    elif resp.status >= 400:
        return "http_status_mismatch", f"status {resp.status}"
    if expect.body is not None and not expect.body.search(resp.body):
        return "http_body_mismatch", f"body does not match /{expect.body.pattern}/"
    return OK, f"status {resp.status}"


def _same_host(url: str, host: str) -> bool:
    """True if `url` is http(s) on `host`; ValueError if it is malformed (a bad port too)."""
    parts = urlsplit(url)
    parts.port  # noqa: B018 - urlsplit checks the port only when asked
    return parts.scheme in ("http", "https") and (parts.hostname or "").lower() == host.lower()


async def fetch(
    url: str,
    address: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float,
    expect: HttpExpectations,
) -> StepResult:
    """GET `url` from `address`, following redirects within the URL's host, and judge it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    endpoint = format_endpoint(address, parts.port or (443 if parts.scheme == "https" else 80))
    start = time.perf_counter()
    connector = aiohttp.TCPConnector(
        resolver=_PinnedResolver(address), ssl=ssl_context, force_close=True, limit=1
    )
    data: dict[str, Any] = {}
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(connector=connector, auto_decompress=True) as session,
        ):
            resp = await _fetch(session, url, expect.max_body)
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
                    data["redirect"] = target
                    break
                if hops == MAX_REDIRECTS:
                    raise RedirectError(f"more than {MAX_REDIRECTS} redirects")
                resp = await _fetch(session, target, expect.max_body)
    except (OSError, TimeoutError, aiohttp.ClientError, ssl.SSLError, RedirectError) as exc:
        code, detail = classify(Step.HTTP, exc)
        return StepResult(Step.HTTP, code, endpoint, time.perf_counter() - start, detail)
    elapsed = time.perf_counter() - start
    code, detail = _judge(resp, expect)
    data.update(
        status=resp.status,
        body_bytes=resp.body_bytes,
        bytes_per_second=round(resp.body_bytes / elapsed, 1) if elapsed > 0 else None,
    )
    if resp.truncated:
        data["truncated"] = True
    return StepResult(Step.HTTP, code, endpoint, elapsed, detail, data)
