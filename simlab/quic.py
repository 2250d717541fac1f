"""UDP servers for the QUIC step: a real HTTP/3 server (aioquic's server side) and
misbehaving UDP responders.

`H3Server` answers every GET with the valid page; `UdpServer` is `silent` (reads, never
answers), `garbage` (answers each datagram with random bytes: not QUIC) or `version` (answers
with a Version Negotiation packet offering only versions nobody speaks).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections import deque
from pathlib import Path
from typing import Self, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

from simlab.net import bind_socket
from simlab.web import VALID_BODY

UDP_MODES = ("silent", "garbage", "version")
# Versions reserved for forcing negotiation (RFC 9000 section 15: 0x?a?a?a?a): none is real.
_UNSPOKEN_VERSIONS = (0x1A2A3A4A, 0x5A6A7A8A)


class _H3Handler(QuicConnectionProtocol):
    """One HTTP/3 connection: every request gets `body` with status 200."""

    def __init__(self, *args: object, server: H3Server, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._server = server
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
            self._server.handshakes += 1
        if self._h3 is None:
            return
        for answer in self._h3.handle_event(event):
            if isinstance(answer, HeadersReceived):
                self._respond(answer)

    def _respond(self, request: HeadersReceived) -> None:
        assert self._h3 is not None
        fields = dict(request.headers)
        self._server.requests.append(
            (fields.get(b":authority", b"").decode(), fields.get(b":path", b"").decode())
        )
        body = self._server.body.encode()
        head = [
            (b":status", b"200"),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        self._h3.send_headers(request.stream_id, head)
        self._h3.send_data(request.stream_id, body, end_stream=True)
        self.transmit()


class H3Server:
    """An HTTP/3 server on UDP `host:port` presenting the certificate in `cert_file`.

    `port` may be a TCP server's, so that one URL reaches both (as a real site serves both).
    `requests` records `(authority, path)`; `handshakes` counts completed handshakes.
    """

    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        body: str = VALID_BODY,
    ) -> None:
        self.host = host
        self.port = port
        self.body = body
        self.requests: deque[tuple[str, str]] = deque(maxlen=1000)
        self.handshakes = 0
        self._config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        self._config.load_cert_chain(str(cert_file), str(key_file))
        self._server: QuicServer | None = None

    async def start(self) -> Self:
        """Bind and start serving; returns self."""
        sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM)
        self.port = sock.getsockname()[1]
        _, server = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: QuicServer(
                configuration=self._config,
                create_protocol=lambda *a, **k: _H3Handler(*a, server=self, **k),
            ),
            sock=sock,
        )
        self._server = server
        return self

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()


def version_negotiation(datagram: bytes) -> bytes | None:
    """A Version Negotiation answer to a long-header client packet (RFC 9000 section 17.2.1),
    echoing its connection IDs and offering only unspoken versions; None if it is not one."""
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return None
    dcid_len = datagram[5]
    dcid = datagram[6 : 6 + dcid_len]
    at = 6 + dcid_len
    if len(datagram) <= at:
        return None
    scid = datagram[at + 1 : at + 1 + datagram[at]]
    versions = b"".join(struct.pack("!I", v) for v in _UNSPOKEN_VERSIONS)
    header = bytes([0x80 | (os.urandom(1)[0] & 0x7F)]) + b"\0\0\0\0"
    return header + bytes([len(scid)]) + scid + bytes([len(dcid)]) + dcid + versions


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, server: UdpServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.server.datagrams += 1
        assert self.transport is not None
        if self.server.mode == "garbage":
            self.transport.sendto(os.urandom(max(1, min(len(data), 1200))), addr)
        elif self.server.mode == "version":
            answer = version_negotiation(data)
            if answer is not None:
                self.transport.sendto(answer, addr)


class UdpServer:
    """A UDP server in one of `UDP_MODES`; `datagrams` counts what it received."""

    def __init__(self, mode: str, host: str = "127.0.0.1", port: int = 0) -> None:
        if mode not in UDP_MODES:
            raise ValueError(f"unknown UDP mode {mode!r}; expected one of {UDP_MODES}")
        self.mode = mode
        self.host = host
        self.port = port
        self.datagrams = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> Self:
        """Bind and start serving; returns self."""
        sock = bind_socket(self.host, self.port, socket.SOCK_DGRAM)
        self.port = sock.getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Responder(self), sock=sock
        )
        self._transport = transport
        return self

    async def close(self) -> None:
        """Stop serving."""
        if self._transport is not None:
            self._transport.close()
