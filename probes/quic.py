"""The QUIC step: a QUIC handshake with the target's SNI and an HTTP/3 GET, to one address.

aioquic does the protocol (sans-IO: `QuicConnection` and `H3Connection`); this module drives
it over a *connected* UDP socket of its own, rather than through `aioquic.asyncio.connect`, so
that what the network did reaches the classifier as itself: an ICMP port or host unreachable
arrives as the socket's errno (a dual-stack, unconnected socket never sees it), a close
carries its error code and reason, and a silent path times out with a count of what did
arrive (nothing, or datagrams that were not QUIC).

The certificate is validated like the TLS step's: the system store plus `tls.ca_file`.
aioquic is loaded only by agents with an `http3` target (`measure` imports this lazily).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamReset,
)

from probes.errors import Outcome, QuicClosedError, measure
from probes.http import BROWSER_HEADERS
from probes.results import QuicFacts, StepResult, format_endpoint
from probes.taxonomy import Step

# aioquic logs every close it sees as a warning ("quic" logger): each one is a classified
# result here, and a blocked target would repeat it in the agent's log every cycle.
logging.getLogger("quic").setLevel(logging.CRITICAL)

# The step's own deadline describes a timeout (what arrived, which phase); `measure`'s bound
# is the backstop a little later, so that the described one is the one that fires.
_BACKSTOP = 0.5


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


def _configuration(server_name: str, trust: QuicTrust, timeout: float) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=server_name,
        verify_mode=ssl.CERT_REQUIRED,
        # A connection left behind must not outlive the step by aioquic's 60 s default; a
        # little beyond the step's deadline, so that the step's own (described) one fires.
        idle_timeout=timeout + 2 * _BACKSTOP,
    )
    config.load_verify_locations(cafile=trust.cafile, capath=trust.capath, cadata=trust.cadata)
    return config


@dataclass(slots=True)
class _Exchange:
    """What the HTTP/3 GET has received so far."""

    stream_id: int
    max_body: int
    status: int | None = None
    body_bytes: int = 0
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.body_bytes >= self.max_body

    def take(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self.stream_id:
            for name, value in event.headers:
                if name == b":status" and self.status is None and value.isdigit():
                    self.status = int(value)
            self.ended |= event.stream_ended
        elif isinstance(event, DataReceived) and event.stream_id == self.stream_id:
            self.body_bytes += len(event.data)
            self.ended |= event.stream_ended


class _Client(asyncio.DatagramProtocol):
    """Drives one `QuicConnection` over a connected UDP transport: every datagram, timer and
    socket error goes into it, and its events settle `progress` (a handshake, an answer) or
    fail it with what ended the connection."""

    def __init__(self, quic: QuicConnection) -> None:
        self.quic = quic
        self.h3 = H3Connection(quic)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.progress: asyncio.Future[None] = self.loop.create_future()
        self.handshake_done = False
        self.alpn: str | None = None
        self.exchange: _Exchange | None = None
        self.datagrams = 0
        self.sent = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.datagrams += 1
        self.quic.receive_datagram(data, addr, now=self.loop.time())
        self._pump()

    def error_received(self, exc: Exception) -> None:
        # On a connected socket the kernel reports ICMP errors here (ECONNREFUSED for a port
        # unreachable, EHOSTUNREACH ...): an answer, unlike silence.
        self._settle(exc)

    def _on_timer(self) -> None:
        self._timer = None
        self.quic.handle_timer(now=self.loop.time())
        self._pump()

    def _pump(self) -> None:
        """Handle what aioquic concluded, send what it wants sent, re-arm its timer."""
        for event in iter(self.quic.next_event, None):
            self._take(event)
        if self.transport is None or self.transport.is_closing():
            return
        for data, _ in self.quic.datagrams_to_send(now=self.loop.time()):
            self.sent += 1
            self.transport.sendto(data)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.quic.get_timer()
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    def _take(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_done = True
            self.alpn = event.alpn_protocol
            self._settle(None)
        elif isinstance(event, ConnectionTerminated):
            reason = event.reason_phrase
            self._settle(
                QuicClosedError(event.error_code, event.frame_type, reason, self.handshake_done)
            )
        elif isinstance(event, StreamReset) and self._ours(event.stream_id):
            self._settle(
                ConnectionResetError(f"request stream reset (error 0x{event.error_code:x})")
            )
        for answer in self.h3.handle_event(event):
            if self.exchange is not None:
                self.exchange.take(answer)
                if self.exchange.done:
                    self._settle(None)

    def _ours(self, stream_id: int) -> bool:
        return self.exchange is not None and self.exchange.stream_id == stream_id

    def _settle(self, exc: BaseException | None) -> None:
        if self.progress.done():
            return
        if exc is None:
            self.progress.set_result(None)
        else:
            self.progress.set_exception(exc)

    def request(self, authority: str, path: str, max_body: int) -> None:
        """Send the GET (after the handshake) and wait for its answer on `progress`."""
        stream_id = self.quic.get_next_available_stream_id()
        self.exchange = _Exchange(stream_id, max_body)
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *((k.lower().encode(), v.encode()) for k, v in BROWSER_HEADERS),
        ]
        self.progress = self.loop.create_future()
        self.h3.send_headers(stream_id, headers, end_stream=True)
        self._pump()

    async def wait(self, deadline: float, phase: str) -> None:
        """Until `progress` settles (raising what ended it), or `deadline`: then a timeout
        that says what did arrive."""
        done, _ = await asyncio.wait({self.progress}, timeout=max(0.0, deadline - self.loop.time()))
        if not done:
            raise TimeoutError(self._silence(phase))
        self.progress.result()

    def _silence(self, phase: str) -> str:
        if self.handshake_done:
            return f"handshake done, no HTTP/3 answer in time ({self.datagrams} datagrams in all)"
        if self.datagrams == 0:
            return f"no answer to the {phase} ({self.sent} datagrams sent, none received)"
        return f"no {phase} in time: {self.datagrams} datagrams received, none completing it"

    def close(self) -> None:
        """Tell the peer we are done (one CONNECTION_CLOSE, not waited for) and let go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.quic.close()
            for data, _ in self.quic.datagrams_to_send(now=self.loop.time()):
                self.transport.sendto(data)
            self.transport.close()


@dataclass(frozen=True, slots=True)
class QuicRequest:
    """What the QUIC step asks of one address: the SNI, and the URL's authority and path."""

    server_name: str
    authority: str
    path: str = "/"
    max_body: int = 1 << 20


def request_for(url: str, max_body: int = 1 << 20) -> QuicRequest:
    """The QUIC step's request for an https URL (its host is the SNI)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return QuicRequest(host, parts.netloc.rpartition("@")[2], path, max_body)


async def exchange(
    address: str, port: int, request: QuicRequest, trust: QuicTrust, timeout: float
) -> QuicFacts:
    """Handshake and GET over QUIC to `address:port`, within `timeout`; raises on failure (the
    caller's boundary classifies)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    start = time.perf_counter()
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    quic = QuicConnection(configuration=_configuration(request.server_name, trust, timeout))
    _, client = await loop.create_datagram_endpoint(
        lambda: _Client(quic), remote_addr=(address, port), family=family
    )
    try:
        assert client.transport is not None
        peer = client.transport.get_extra_info("peername")
        quic.connect(peer, now=loop.time())
        client._pump()
        await client.wait(deadline, "QUIC Initial")
        handshake = time.perf_counter() - start
        client.request(request.authority, request.path, request.max_body)
        await client.wait(deadline, "HTTP/3 GET")
        answer = client.exchange
        assert answer is not None
        return QuicFacts(
            alpn=client.alpn,
            status=answer.status,
            body_bytes=answer.body_bytes,
            handshake_seconds=round(handshake, 6),
            truncated=not answer.ended,
        )
    finally:
        client.close()


def _describe(facts: QuicFacts, server_name: str) -> str:
    return f"HTTP/3 {facts.status}, {facts.body_bytes} body bytes, SNI {server_name}"


async def run(
    address: str, port: int, request: QuicRequest, trust: QuicTrust, timeout: float
) -> StepResult:
    """The QUIC step: a QUIC handshake with SNI `request.server_name` to `address:port` over
    UDP, the certificate validated against `trust`, then an HTTP/3 GET of `request.path`.
    Any HTTP status is success: the answer proves the path, the TCP chain judges the page."""

    async def work() -> Outcome:
        facts = await exchange(address, port, request, trust, timeout)
        return Outcome(detail=_describe(facts, request.server_name), facts=facts)

    endpoint = format_endpoint(address, port)
    return await measure(Step.QUIC, endpoint, timeout + _BACKSTOP, work)
