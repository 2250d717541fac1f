"""Receiving packets on raw sockets from the event loop, without ever blocking it.

A raw socket of protocol P gets a copy of every incoming IPv4 packet of P on the host (in
the process's network namespace), IP header included. `Capture` reads its sockets with
`loop.add_reader`, keeps the packets from the addresses it was asked about (ICMP errors from
any router), parses them with scapy, and wakes whoever waits for a matching one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from probes.raw import packets

PROTOCOLS = {"icmp": socket.IPPROTO_ICMP, "tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
MAX_BUFFERED = 4096
RECV_BYTES = 65535
READS_PER_WAKEUP = 256
SO_ATTACH_FILTER = 26
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


@dataclass(frozen=True, slots=True)
class Captured:
    """A received packet and when it arrived (time.monotonic())."""

    at: float
    packet: packets.IP


Match = Callable[[packets.IP], bool]


def attach_source_filter(sock: socket.socket, sources: Iterable[bytes]) -> None:
    """Make the kernel queue only packets from `sources` (packed IPv4) on raw socket `sock`.

    A raw TCP socket otherwise gets a copy of every TCP packet the host receives; this
    classic BPF program (the IP header is at offset 0 on a raw socket) drops the rest before
    they are copied; the packets queued before it was attached are discarded. (The kernel
    copies the program; the buffer need not outlive the call.)
    """
    wanted = list(sources)
    program = [(BPF_LD_W_ABS, 0, 0, 12)]
    for i, address in enumerate(wanted):
        # On a match jump to the accepting `ret`, which follows the remaining compares.
        program.append((BPF_JEQ_K, len(wanted) - i, 0, int.from_bytes(address, "big")))
    program += [(BPF_RET_K, 0, 0, 0), (BPF_RET_K, 0, 0, 0xFFFF)]
    attach_filter(sock, program)


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """Attach the classic BPF `program` ((code, jt, jf, k) rows) to `sock`, then drop what
    was queued before it (unfiltered)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    # Whatever arrived between socket() and the attach was queued unfiltered: drop it.
    with contextlib.suppress(BlockingIOError, InterruptedError):
        for _ in range(MAX_BUFFERED):
            sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)


class Capture:
    """Raw receive sockets for `protocols`, kept open for an `async with` block.

    TCP and UDP packets are kept only when their source is in `sources` (the probed
    addresses), so the agent's other traffic is never parsed; ICMP is kept whatever its
    source (time-exceeded comes from routers), unless it is one of our own echo requests.
    """

    def __init__(self, protocols: Iterable[str], sources: Iterable[str]) -> None:
        self._protocols = [PROTOCOLS[p] for p in protocols]
        self._sources = {socket.inet_aton(s) for s in sources}
        self._sockets: list[socket.socket] = []
        self._packets: deque[Captured] = deque(maxlen=MAX_BUFFERED)
        self._waiters: list[tuple[Match, asyncio.Future[Captured]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Capture:
        self._loop = asyncio.get_running_loop()
        try:
            for proto in self._protocols:
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
                sock.setblocking(False)
                if proto != socket.IPPROTO_ICMP:
                    attach_source_filter(sock, self._sources)
                self._sockets.append(sock)
                self._loop.add_reader(sock.fileno(), self._readable, sock)
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
        for sock in self._sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    def _readable(self, sock: socket.socket) -> None:
        # Bounded per wakeup, so that a flood cannot keep the loop here.
        for _ in range(READS_PER_WAKEUP):
            try:
                data = sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 20:
                continue
            proto = data[9]
            if proto != socket.IPPROTO_ICMP and data[12:16] not in self._sources:
                continue
            header = (data[0] & 0x0F) * 4
            if proto == socket.IPPROTO_ICMP and len(data) > header and data[header] == 8:
                continue  # an echo request: ours, seen on the way out of loopback
            try:
                packet = packets.parse(data)
            except Exception:  # scapy raises assorted errors on malformed input
                continue
            self._add(Captured(time.monotonic(), packet))

    def _add(self, item: Captured) -> None:
        self._packets.append(item)
        for entry in list(self._waiters):
            match, future = entry
            if not future.done() and match(item.packet):
                future.set_result(item)
                self._waiters.remove(entry)

    def matching(self, match: Match, since: float = 0.0) -> list[Captured]:
        """Every buffered packet that matches and arrived at or after `since`."""
        return [c for c in self._packets if c.at >= since and match(c.packet)]

    async def wait(self, match: Match, timeout: float, since: float = 0.0) -> Captured | None:
        """The first packet (buffered, or arriving within `timeout`) that matches, or None."""
        found = self.matching(match, since)
        if found:
            return found[0]
        assert self._loop is not None, "Capture used outside `async with`"
        future: asyncio.Future[Captured] = self._loop.create_future()
        entry = (match, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError:
            return None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
