"""The QUIC step: a QUIC handshake with the target's SNI and an HTTP/3 GET, to one address.

Browsers that fail over HTTP/3 fall back to TCP, so this step is evidence beside a target's
chain, never its verdict (docs/taxonomy.md). The certificate is validated like the TLS step's:
the system store plus `tls.ca_file`. The protocol is aioquic's, driven by
`probes.quic_client`, which loads only when a QUIC step runs (an agent without `http3`
targets never imports aioquic).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult

from probes.errors import Outcome, measure
from probes.results import Endpoint, QuicFacts, StepResult
from probes.taxonomy import Step


@dataclass(frozen=True, slots=True)
class QuicTrust:
    """Trust anchors for QUIC, as the TLS step's context has them: the system store's file and
    directory (OpenSSL's defaults, as `ssl.create_default_context` loads them) and the PEM of
    `tls.ca_file`. aioquic falls back to certifi's bundle only when all three are missing."""

    cafile: str | None = None
    capath: str | None = None
    cadata: bytes | None = None


def make_trust(ca_file: str | None = None) -> QuicTrust:
    """The trust anchors for the QUIC step; reads `ca_file` once, at plan time."""
    defaults = ssl.get_default_verify_paths()
    cadata = Path(ca_file).read_bytes() if ca_file else None
    return QuicTrust(defaults.cafile, defaults.capath, cadata)


@dataclass(frozen=True, slots=True)
class QuicRequest:
    """What the QUIC step asks of one address: the SNI, and the URL's authority and path."""

    server_name: str
    authority: str
    path: str = "/"
    max_body: int = 1 << 20


def request_for(parts: SplitResult, max_body: int = 1 << 20) -> QuicRequest:
    """The QUIC step's request for an https URL, parsed (its host is the SNI)."""
    host = parts.hostname or ""
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return QuicRequest(host, parts.netloc.rpartition("@")[2], path, max_body)


def _describe(facts: QuicFacts, server_name: str) -> str:
    return f"HTTP/3 {facts.status}, {facts.body_bytes} body bytes, SNI {server_name}"


async def run(
    address: str, port: int, request: QuicRequest, trust: QuicTrust, timeout: float
) -> StepResult:
    """The QUIC step: a QUIC handshake with SNI `request.server_name` to `address:port` over
    UDP, the certificate validated against `trust`, then an HTTP/3 GET of `request.path`.
    Any HTTP status is success: the answer proves the path, the TCP chain judges the page."""

    async def work() -> Outcome:
        from probes.quic_client import exchange  # aioquic loads with the first QUIC step

        facts = await exchange(address, port, request, trust)
        return Outcome(detail=_describe(facts, request.server_name), facts=facts)

    return await measure(Step.QUIC, Endpoint(address, port), timeout, work)
