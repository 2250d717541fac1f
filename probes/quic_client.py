"""The QUIC client behind the QUIC step: aioquic's sans-IO `QuicConnection` and `H3Connection`
driven over a *connected* UDP socket of our own, rather than through `aioquic.asyncio.connect`,
so that what the network did reaches the classifier as itself: an ICMP port or host
unreachable arrives as the socket's errno (aioquic's dual-stack, unconnected socket never sees
it), a close carries its error code and reason (`QuicClosedError`), and a silent path times
out saying what did arrive (nothing, or datagrams that were not QUIC).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import cast

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

from probes.browser import HEADERS as BROWSER_HEADERS
from probes.errors import QuicClosedError
from probes.errors import deadline as step_deadline
from probes.quic import QuicRequest, QuicTrust
from probes.results import QuicFacts

# aioquic logs every close it sees as a warning ("quic" logger): each one is a classified
# result here, and a blocked target would repeat it in the agent's log every cycle.
logging.getLogger("quic").setLevel(logging.CRITICAL)

# Far enough ahead of aioquic's clock to end any closing period or idle wait.
_EXPIRY = 3600.0
# aioquic's reason for a connection its idle timer ended.
_IDLE = "Idle timeout"


def _configuration(server_name: str, trust: QuicTrust, timeout: float) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=server_name,
        verify_mode=ssl.CERT_REQUIRED,
        # A connection left behind must not outlive the step by aioquic's 60 s default; a
        # little beyond the step's deadline, so that the step's own (described) one fires.
        idle_timeout=timeout + 1.0,
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

    def start(self) -> None:
        """Send the first flight (the Initial) once `quic.connect` was called."""
        self._pump()

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
            self._expire()
        if not self.progress.done():
            raise TimeoutError(self._silence(phase))
        self.progress.result()

    def _expire(self) -> None:
        """At the deadline, run aioquic's clock to the end: a close it had begun (our own on
        a certificate that does not validate, or the peer's) reports its event only after a
        closing period of three probe timeouts, which a loaded machine can stretch past the
        deadline; this ends it now with its real code. A connection that was only waiting
        ends idle, which is the timeout `wait` describes."""
        self.quic.handle_timer(now=self.loop.time() + _EXPIRY)
        for event in iter(self.quic.next_event, None):
            idle = isinstance(event, ConnectionTerminated) and event.reason_phrase == _IDLE
            if not idle:
                self._take(event)

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


async def exchange(address: str, port: int, request: QuicRequest, trust: QuicTrust) -> QuicFacts:
    """Handshake and GET over QUIC to `address:port` within the step's deadline (stopping a
    little before it, to say what did arrive); raises on failure (the caller's boundary
    classifies)."""
    loop = asyncio.get_running_loop()
    step = step_deadline()
    deadline, timeout = step.reading_until, step.timeout
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
        client.start()
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
