"""An authoritative DNS server over UDP and TCP (one port) answering from a `Zone`.

Garbage never crashes it: an unparsable datagram is dropped, an unparsable TCP message ends
that connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from simlab.net import StreamServer, bind_socket
from simlab.zone import Zone

log = logging.getLogger(__name__)

_UDP_DEFAULT_PAYLOAD = 512


def parse_query(wire: bytes) -> dns.message.Message | None:
    """The query in `wire`, or None for anything that is not a parsable DNS query."""
    try:
        message = dns.message.from_wire(wire)
    except Exception:  # any garbage from the network is dropped, never raised
        return None
    return None if message.flags & dns.flags.QR else message


def encode(message: dns.message.Message, max_size: int) -> bytes:
    """Wire form of a reply, truncated (TC set, sections emptied) if it exceeds `max_size`."""
    try:
        return message.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        message.answer.clear()
        message.authority.clear()
        message.additional.clear()
        message.flags |= dns.flags.TC
        return message.to_wire(max_size=max_size)


class DnsServer:
    """Serve `zone` on `host:port` over UDP and TCP; port 0 picks a port free for both.

    `queries` records `(transport, name, type)` of the recent queries, so that tests can see
    that a client really asked this server.
    """

    def __init__(self, zone: Zone, host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone = zone
        self.host = host
        self.port = port
        self.queries: deque[tuple[str, str, str]] = deque(maxlen=1000)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp = StreamServer(self._serve_stream)
        self._pending: set[asyncio.TimerHandle] = set()

    async def start(self) -> DnsServer:
        """Bind and start serving; returns self."""
        udp_sock, tcp_sock = _bind_pair(self.host, self.port)
        self.port = udp_sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=udp_sock
        )
        await self._tcp.start(tcp_sock)
        return self

    async def close(self) -> None:
        """Stop serving and drop replies still waiting to be sent."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._udp is not None:
            self._udp.close()
        await self._tcp.close()

    def _answer(self, wire: bytes, transport: str) -> list[tuple[float, bytes]] | None:
        """The (delay, wire reply) pairs for one received message; None if unparsable."""
        query = parse_query(wire)
        if query is None:
            log.debug("dropped %d unparsable bytes over %s", len(wire), transport)
            return None
        if query.opcode() != dns.opcode.QUERY:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NOTIMP)
            return [(0.0, response.to_wire())]
        if query.question:
            question = query.question[0]
            self.queries.append(
                (transport, question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
            )
        replies = self.zone.replies(query, datagram=transport == "udp")
        max_size = max(query.payload, _UDP_DEFAULT_PAYLOAD) if transport == "udp" else 65535
        return [(r.delay, encode(r.message, 65535 if r.oversize else max_size)) for r in replies]

    def _datagram(self, wire: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for delay, data in self._answer(wire, "udp") or ():
            if delay <= 0:
                self._send(data, addr)
                continue
            # Forget the handles that have fired, so that the set stays small.
            self._pending = {h for h in self._pending if h.when() > loop.time()}
            self._pending.add(loop.call_later(delay, self._send, data, addr))

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(data, addr)

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A TCP client may send several length-prefixed queries on one connection.
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            wire = await reader.readexactly(size)
            replies = self._answer(wire, "tcp")
            if replies is None:
                return
            for _, data in replies:
                writer.write(len(data).to_bytes(2, "big") + data)
            await writer.drain()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port-unreachable from a client that went away is no reason to stop.
        log.debug("udp error: %s", exc)


def _bind_pair(host: str, port: int, attempts: int = 20) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same port (retrying if an ephemeral one is taken)."""
    for _ in range(attempts if port == 0 else 1):
        udp = bind_socket(host, port, socket.SOCK_DGRAM)
        try:
            return udp, bind_socket(host, udp.getsockname()[1], socket.SOCK_STREAM)
        except OSError:
            udp.close()
            if port != 0:
                raise
    raise OSError(f"no port free for both UDP and TCP on {host}")


async def start_dns(zone: Zone, host: str = "127.0.0.1", port: int = 0) -> DnsServer:
    """Start a DNS server for `zone`; see `DnsServer`."""
    return await DnsServer(zone, host, port).start()
