"""Raw TCP SYNs (built by scapy) from the kernel's own source address and a reserved port."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from types import TracebackType

from probes.raw import packets
from probes.raw.ratelimit import RateLimits
from probes.raw.send import sendto


class SynSender:
    """Sends SYNs to one destination through an IPPROTO_RAW socket; use with `with`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.source = packets.local_address(address)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._socket.setblocking(False)

    def __enter__(self) -> SynSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._socket.close()

    @contextlib.asynccontextmanager
    async def send(
        self, port: int, ttl: int, limits: RateLimits
    ) -> AsyncIterator[tuple[int, float]]:
        """Send one SYN to `port` with `ttl` (rate-limited); yield (source port, time sent).

        The source port stays reserved by a bound, not listening, socket until the block
        ends, so no kernel connection of ours can take it while answers are awaited. The
        kernel answers a SYN-ACK to it with a RST, as for any SYN it did not send.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
            reserved.bind((self.source, 0))
            sport = reserved.getsockname()[1]
            await limits.acquire(self.address)
            sent = time.monotonic()
            frame = packets.syn(self.source, self.address, sport, port, ttl, random.getrandbits(32))
            await sendto(self._socket, frame, (self.address, 0))
            yield sport, sent
