"""One address's connection as the steps build it up: `tcp` opens the socket, `tls` runs the
handshake on it, and `http` speaks over whichever stream is on top. Its owner (the measurement
layer) closes it, whatever the steps concluded."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Protocol

from probes.results import Endpoint
from probes.transfer import Transfer

READ_SIZE = 65536
# SO_LINGER on with a zero timeout: close() sends a RST and discards unsent data.
_RESET = struct.pack("ii", 1, 0)


class Stream(Protocol):
    """Bytes to and from the peer: plain TCP, or TLS on top of it. While `transfer` is set,
    every read off the socket is counted in it (ciphertext under TLS)."""

    transfer: Transfer | None

    def meter(self, now: float) -> Transfer:
        """Start counting reads afresh for a response whose request goes out at `now`."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def recv(self, size: int = READ_SIZE) -> bytes:
        """Up to `size` bytes; b"" once the peer has closed."""
        ...


@dataclass(slots=True)
class PlainStream:
    """A connected non-blocking socket."""

    sock: socket.socket
    transfer: Transfer | None = None

    def meter(self, now: float) -> Transfer:
        self.transfer = Transfer(now)
        return self.transfer

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self, size: int = READ_SIZE) -> bytes:
        loop = asyncio.get_running_loop()
        data = await loop.sock_recv(self.sock, size)
        if self.transfer is not None:
            self.transfer.read(len(data), loop.time())
        return data


@dataclass(slots=True)
class Connection:
    """The socket and the stream on top of it, shared by the steps run against one address."""

    address: str
    port: int
    sock: socket.socket | None = None
    stream: Stream | None = None
    tls: ssl.SSLObject | None = None
    endpoint: Endpoint = field(init=False)

    def __post_init__(self) -> None:
        self.endpoint = Endpoint(self.address, self.port)

    def close(self, abort: bool = False) -> None:
        """Close the socket (a TLS session over a MemoryBIO needs no closing of its own).

        `abort` resets the connection instead of closing it in order: the kernel then drops
        what it had not delivered instead of retransmitting it for minutes after the step gave
        up (a ClientHello with a blocked name, retransmitted, would set off a censor's residual
        block again and again)."""
        if self.sock is not None:
            if abort:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.sock.close()
