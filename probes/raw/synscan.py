"""Stateless SYN scan: one SYN per address, answers matched by a keyed cookie, not a table.

The prefix sampler's `syn` method (docs/prefixes.md). Every SYN leaves from one reserved
source port with a sequence number that is a keyed hash of (address, port, source port), a
SYN cookie: an answer is ours exactly when what it acknowledges (a SYN-ACK's or RST's ack
minus one) or quotes (an ICMP error's copy of our header) is the cookie of the address it
concerns, so no connection is kept anywhere, not in the kernel and not here. The kernel
answers each SYN-ACK with a RST, as for any SYN it did not send itself.

Answers mean what they mean to the kernel's own connect(): a SYN-ACK is `ok`, a RST that
acknowledges the SYN is ECONNREFUSED, an ICMP unreachable or time-exceeded is the errno the
kernel's table gives it (icmp_err_convert; a connecting socket gives up on any of them), and
silence is a timeout. Each address runs through `probes.errors.measure` as the TCP step, so
the codes come from the project's one table (`tcp_refused`, `tcp_host_unreachable`, ...).

Unlike connect() a single SYN is sent, never retransmitted: a lost SYN or SYN-ACK is a
timeout. Needs CAP_NET_RAW. IPv4 and IPv6.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from probes.errors import Outcome, measure
from probes.raw import packets
from probes.raw.capture import BPF_JEQ_K, BPF_RET_K, READS_PER_WAKEUP, RECV_BYTES, attach_filter
from probes.raw.ratelimit import TokenBucket
from probes.raw.send import sendto
from probes.results import Endpoint, StepResult
from probes.taxonomy import Step

# The largest burst is this share of a second's packets.
BURST_SECONDS = 0.01
RECEIVE_BUFFER = 4 << 20
_DOMAIN = b"reachprobe/syn-scan/v1"
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_TCP_HEADER = 24  # 20 bytes and the MSS option, as packets.syn builds it

# What the kernel's connect() reports for an ICMP error to its SYN (Linux icmp_err_convert
# and icmpv6_err_convert); codes absent here (fragmentation needed, unknown ones) are ignored
# by a connecting socket, so they are ignored here too.
ICMP4_UNREACH_ERRNO = {
    0: errno.ENETUNREACH,
    1: errno.EHOSTUNREACH,
    2: errno.ENOPROTOOPT,
    3: errno.ECONNREFUSED,
    5: errno.EOPNOTSUPP,
    6: errno.ENETUNREACH,
    7: errno.EHOSTDOWN,
    8: errno.ENONET,
    9: errno.ENETUNREACH,
    10: errno.EHOSTUNREACH,
    11: errno.ENETUNREACH,
    12: errno.EHOSTUNREACH,
    13: errno.EHOSTUNREACH,
    14: errno.EHOSTUNREACH,
    15: errno.EHOSTUNREACH,
}
ICMP6_UNREACH_ERRNO = {
    0: errno.ENETUNREACH,
    1: errno.EACCES,
    2: errno.EHOSTUNREACH,
    3: errno.EHOSTUNREACH,
    4: errno.ECONNREFUSED,
    5: errno.EACCES,
    6: errno.EACCES,
}
ICMP4_UNREACH, ICMP4_TIME_EXCEEDED = 3, 11
ICMP6_UNREACH, ICMP6_TIME_EXCEEDED = 1, 3
# BPF: load the IPv4 header length into X, then half-words/bytes relative to it.
_BPF_LDX_MSH = 0xB1
_BPF_LD_H_IND = 0x48
_BPF_LD_B_IND = 0x50

Key = tuple[bytes, int]  # (packed address, port)


def cookie(key: bytes, address: bytes, port: int, sport: int) -> int:
    """The sequence number of the SYN to packed `address`:`port` from `sport` under `key`."""
    data = address + port.to_bytes(2, "big") + sport.to_bytes(2, "big")
    digest = hashlib.blake2b(_DOMAIN + data, key=key, digest_size=4).digest()
    return int.from_bytes(digest, "big")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(source: bytes, destination: bytes, length: int) -> bytes:
    if len(source) == 4:
        return source + destination + struct.pack("!BBH", 0, socket.IPPROTO_TCP, length)
    return source + destination + struct.pack("!I3xB", length, socket.IPPROTO_TCP)


@dataclass(frozen=True, slots=True)
class SynBuilder:
    """TCP SYN segments (no IP header: the kernel adds it) from one source address and port.

    scapy builds the segment once, as the raw probes' SYNs look; each SYN then only patches
    the destination port, the sequence number and the checksum into it.
    """

    source: bytes
    sport: int
    key: bytes
    template: bytes

    @classmethod
    def create(cls, source: str, sport: int, key: bytes) -> SynBuilder:
        """A builder for SYNs from `source`:`sport` whose cookies use `key`."""
        # Without an IP layer scapy leaves the checksum zero; `segment` computes it.
        template = bytes(packets.syn_segment(sport, 1, 0))
        if len(template) != _TCP_HEADER:
            raise AssertionError(f"unexpected SYN template of {len(template)} bytes")
        return cls(ipaddress.ip_address(source).packed, sport, key, template)

    def segment(self, address: bytes, port: int) -> bytes:
        """The SYN to packed `address`:`port`, checksummed."""
        seq = cookie(self.key, address, port, self.sport)
        body = bytearray(self.template)
        struct.pack_into("!HI", body, 2, port, seq)
        struct.pack_into("!H", body, 16, 0)
        pseudo = _pseudo_header(self.source, address, len(body))
        struct.pack_into("!H", body, 16, checksum(pseudo + bytes(body)))
        return bytes(body)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to one of our SYNs: the probed address and port, and the errno it means to
    connect() (None: a SYN-ACK, the port is open)."""

    address: bytes
    port: int
    error: int | None


def _tcp_reply(address: bytes, segment: bytes, sport: int, key: bytes) -> Reply | None:
    """A SYN-ACK or an acknowledging RST from `address` to our `sport`, or None."""
    if len(segment) < 20:
        return None
    port, dport, _, ack, _, flags = struct.unpack_from("!HHIIBB", segment)
    if dport != sport or not flags & _ACK:
        return None
    if (ack - 1) & 0xFFFFFFFF != cookie(key, address, port, sport):
        return None
    if flags & _RST:
        return Reply(address, port, errno.ECONNREFUSED)
    return Reply(address, port, None) if flags & _SYN else None


def _quoted(quote: bytes, address: bytes, sport: int, key: bytes, error: int) -> Reply | None:
    """The Reply for an ICMP error quoting our SYN's TCP header (`quote` starts at it)."""
    if len(quote) < 8:
        return None
    source_port, port, seq = struct.unpack_from("!HHI", quote)
    if source_port != sport or seq != cookie(key, address, port, sport):
        return None
    return Reply(address, port, error)


def parse_ipv4(packet: bytes, sport: int, key: bytes) -> Reply | None:
    """The Reply an IPv4 packet (header included, as a raw socket reads it) carries, or None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    body = packet[ihl:]
    if packet[9] == socket.IPPROTO_TCP:
        return _tcp_reply(packet[12:16], body, sport, key)
    if packet[9] != socket.IPPROTO_ICMP or len(body) < 28:
        return None
    kind, code = body[0], body[1]
    if kind == ICMP4_TIME_EXCEEDED:
        error: int | None = errno.EHOSTUNREACH
    else:
        error = ICMP4_UNREACH_ERRNO.get(code) if kind == ICMP4_UNREACH else None
    inner = body[8:]
    if error is None or inner[0] >> 4 != 4 or inner[9] != socket.IPPROTO_TCP:
        return None
    return _quoted(inner[(inner[0] & 0x0F) * 4 :], inner[16:20], sport, key, error)


def parse_ipv6_tcp(source: bytes, segment: bytes, sport: int, key: bytes) -> Reply | None:
    """The Reply a TCP segment from IPv6 `source` carries (IPv6 raw sockets strip the IP
    header), or None."""
    return _tcp_reply(source, segment, sport, key)


def parse_icmpv6(message: bytes, sport: int, key: bytes) -> Reply | None:
    """The Reply an ICMPv6 message carries (one quoting our SYN right after the IPv6 header),
    or None."""
    if len(message) < 8 + 40 + 8:
        return None
    kind, code = message[0], message[1]
    if kind == ICMP6_TIME_EXCEEDED:
        error: int | None = errno.EHOSTUNREACH
    else:
        error = ICMP6_UNREACH_ERRNO.get(code) if kind == ICMP6_UNREACH else None
    inner = message[8:]
    if error is None or inner[0] >> 4 != 6 or inner[6] != socket.IPPROTO_TCP:
        return None
    return _quoted(inner[40:], inner[24:40], sport, key, error)


def _ipv4_filters(sport: int) -> tuple[list[tuple[int, int, int, int]], ...]:
    """Classic BPF for the IPv4 TCP and ICMP sockets: only segments to `sport`, and only
    unreachable or time-exceeded messages quoting a segment from it (a quoted header without
    options, as our SYNs have), reach Python."""
    tcp = [
        (_BPF_LDX_MSH, 0, 0, 0),
        (_BPF_LD_H_IND, 0, 0, 2),
        (BPF_JEQ_K, 0, 1, sport),
        (BPF_RET_K, 0, 0, 0xFFFF),
        (BPF_RET_K, 0, 0, 0),
    ]
    icmp = [
        (_BPF_LDX_MSH, 0, 0, 0),
        (_BPF_LD_B_IND, 0, 0, 0),
        (BPF_JEQ_K, 1, 0, ICMP4_UNREACH),
        (BPF_JEQ_K, 0, 3, ICMP4_TIME_EXCEEDED),
        (_BPF_LD_H_IND, 0, 0, 8 + 20),
        (BPF_JEQ_K, 0, 1, sport),
        (BPF_RET_K, 0, 0, 0xFFFF),
        (BPF_RET_K, 0, 0, 0),
    ]
    return tcp, icmp


class _Family:
    """The raw sockets of one address family: a sender that also reads TCP answers, an ICMP
    reader, and the bound TCP socket that keeps the source port ours while the scan runs."""

    def __init__(self, source: str, version: int, key: bytes) -> None:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        icmp = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
        self.version = version
        self._sockets: list[socket.socket] = []
        try:
            self.reserved = self._open(family, socket.SOCK_STREAM, 0)
            self.reserved.bind((source, 0))
            sport = self.reserved.getsockname()[1]
            self.builder = SynBuilder.create(source, sport, key)
            self.tcp = self._open(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
            self.icmp = self._open(family, socket.SOCK_RAW, icmp)
            # A burst of answers must wait in the kernel, not be dropped as silence, while the
            # loop is busy sending (the kernel caps this at net.core.rmem_max).
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if version == 4:
                tcp_filter, icmp_filter = _ipv4_filters(sport)
                attach_filter(self.tcp, tcp_filter)
                attach_filter(self.icmp, icmp_filter)
            # Bound to the source, so the kernel puts the address our checksums assume.
            self.tcp.bind((source, 0))
        except BaseException:
            self.close()
            raise

    def _open(self, family: int, kind: int, proto: int) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        self._sockets.append(sock)
        return sock

    def parse_tcp(self, data: bytes, sender: str) -> Reply | None:
        b = self.builder
        if self.version == 4:
            return parse_ipv4(data, b.sport, b.key)
        packed = socket.inet_pton(socket.AF_INET6, sender.split("%", 1)[0])
        return parse_ipv6_tcp(packed, data, b.sport, b.key)

    def parse_icmp(self, data: bytes) -> Reply | None:
        b = self.builder
        if self.version == 4:
            return parse_ipv4(data, b.sport, b.key)
        return parse_icmpv6(data, b.sport, b.key)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


class SynScanner:
    """One scan's raw sockets (per address family in use), read through the event loop.

    `probe(address, port, timeout)` sends one SYN and waits for its answer as the TCP step;
    use inside `async with`.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        self._key = secrets.token_bytes(16)
        self._sources: dict[int, str] = {}
        # A family without a route: each of its probes fails as a connect would (ENETUNREACH).
        self._unroutable: dict[int, OSError] = {}
        for address in addresses:
            version = _version(address)
            if version in self._sources or version in self._unroutable:
                continue
            try:
                # The route of a family's first address gives the source of all of them.
                self._sources[version] = _local_address(address, version)
            except OSError as exc:
                self._unroutable[version] = exc
        self._families: dict[int, _Family] = {}
        self._waiting: dict[Key, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> SynScanner:
        self._loop = asyncio.get_running_loop()
        try:
            for version, source in self._sources.items():
                family = self._families[version] = _Family(source, version, self._key)
                self._loop.add_reader(family.tcp.fileno(), self._read, family, family.tcp)
                self._loop.add_reader(family.icmp.fileno(), self._read, family, family.icmp)
        except BaseException:
            self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        for family in self._families.values():
            if self._loop is not None:
                self._loop.remove_reader(family.tcp.fileno())
                self._loop.remove_reader(family.icmp.fileno())
            family.close()
        self._families.clear()

    def _read(self, family: _Family, sock: socket.socket) -> None:
        # Bounded per wakeup, so that a flood cannot keep the loop here.
        for _ in range(READS_PER_WAKEUP):
            try:
                data, sender = sock.recvfrom(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if sock is family.tcp:
                reply = family.parse_tcp(data, sender[0])
            else:
                reply = family.parse_icmp(data)
            if reply is not None:
                self._answer(reply)

    def _answer(self, reply: Reply) -> None:
        future = self._waiting.get((reply.address, reply.port))
        if future is None or future.done():
            return  # late, duplicate, or for an address already answered
        if reply.error is None:
            future.set_result(None)
        else:
            future.set_exception(OSError(reply.error, os.strerror(reply.error)))

    async def probe(self, address: str, port: int, timeout: float) -> StepResult:
        """One SYN to `address`:`port`, as the TCP step: `ok` on a SYN-ACK, else the code
        the kernel's connect() would have got."""
        loop = self._loop
        assert loop is not None, "SynScanner used outside `async with`"
        version = _version(address)
        packed = socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, address)
        key = (packed, port)
        future = loop.create_future()
        self._waiting[key] = future

        async def work() -> Outcome:
            if version in self._unroutable:
                error = self._unroutable[version]
                raise OSError(error.errno, error.strerror)
            family = self._families[version]
            await sendto(family.tcp, family.builder.segment(packed, port), (address, 0))
            await future
            return Outcome()

        try:
            return await measure(Step.TCP, Endpoint(address, port), timeout, work)
        finally:
            del self._waiting[key]
            if not future.done():
                future.cancel()


def _version(address: str) -> int:
    # Addresses come checked (ip_address) from the sampler; this is the per-SYN fast path.
    return 6 if ":" in address else 4


def _local_address(destination: str, version: int) -> str:
    """The source address the kernel would use towards `destination` (sends nothing)."""
    if version == 4:
        return packets.local_address(destination)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 9))
        return str(sock.getsockname()[0])


def bucket(rate: float) -> TokenBucket:
    """The token bucket of a scan at `rate` SYNs per second, with a small burst."""
    return TokenBucket(rate, max(1.0, rate * BURST_SECONDS))


async def scan(jobs: Sequence[tuple[str, int]], timeout: float, rate: float) -> list[StepResult]:
    """One SYN to each (address, port), at most `rate` a second; the results in job order.

    Each answer (or its absence within `timeout` of its own SYN) is the TCP step's result.
    Raises PermissionError without CAP_NET_RAW, ValueError for a bad rate or a job given twice.
    """
    if not rate > 0:
        raise ValueError("rate must be greater than zero")
    if len(set(jobs)) != len(jobs):
        # Answers are told apart by (address, port) alone.
        raise ValueError("a scan cannot probe the same address and port twice")
    limit = bucket(rate)
    results: list[StepResult | None] = [None] * len(jobs)

    async def one(index: int, address: str, port: int) -> None:
        results[index] = await scanner.probe(address, port, timeout)

    scanner = SynScanner([address for address, _ in jobs])
    async with scanner, asyncio.TaskGroup() as group:
        for index, (address, port) in enumerate(jobs):
            delay = limit.reserve()
            if delay:
                await asyncio.sleep(delay)
            group.create_task(one(index, address, port))
    return [r for r in results if r is not None]
