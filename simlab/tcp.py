"""Raw TCP servers that misbehave where a censor would: after the client's first flight.

The client's first flight is its TLS ClientHello (or, for plain HTTP, its request), so the
same server yields the TLS-stage failure for an https target and the HTTP-stage one for an
http target:

- `reset`: read it, then reset the connection (SO_LINGER 0, then close: the kernel sends RST);
- `eof`: read it, then close cleanly (FIN);
- `silent`: accept and never send anything;
- `alert`: read it, then send a fatal TLS alert record and close;
- `http403`: read it, then answer in plain text `HTTP/1.1 403 Forbidden` and close, as an
  HTTP proxy in the path does to a ClientHello it will not pass.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from simlab.net import TcpService

RAW_MODES = ("reset", "eof", "silent", "alert", "http403")
HANDSHAKE_FAILURE = 40
_READ_LIMIT = 65536
FORBIDDEN_BODY = (
    b"<html><head><title>403 Forbidden</title></head><body>Access denied</body></html>\n"
)
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nServer: squid\r\nContent-Type: text/html\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(FORBIDDEN_BODY)
) + FORBIDDEN_BODY


def alert_record(description: int = HANDSHAKE_FAILURE) -> bytes:
    """A TLS 1.2-framed fatal alert record (content type 21, level 2)."""
    return bytes([21, 3, 3, 0, 2, 2, description])


class RawServer(TcpService):
    """Accept TCP connections on `host:port` and misbehave as `mode` says (see the module)."""

    def __init__(
        self, mode: str, host: str = "127.0.0.1", port: int = 0, alert: int = HANDSHAKE_FAILURE
    ) -> None:
        if mode not in RAW_MODES:
            raise ValueError(f"unknown raw mode {mode!r}; expected one of {RAW_MODES}")
        super().__init__(host, port)
        self.mode = mode
        self.alert = alert

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "silent":
            # Keep draining so that the client's close is noticed and the task ends.
            while await reader.read(_READ_LIMIT):
                pass
            return
        if not await reader.read(_READ_LIMIT):
            return
        if self.mode == "reset":
            reset(writer)
        elif self.mode in ("alert", "http403"):
            writer.write(alert_record(self.alert) if self.mode == "alert" else FORBIDDEN)
            await writer.drain()
        # `eof` (and the others after their answer): StreamServer closes the stream cleanly.


def reset(writer: asyncio.StreamWriter) -> None:
    """End a connection with a RST (SO_LINGER 0, then close), as an injecting censor does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def start_raw(
    mode: str, host: str = "127.0.0.1", port: int = 0, alert: int = HANDSHAKE_FAILURE
) -> RawServer:
    """Start a misbehaving TCP server; see `RawServer`."""
    return await RawServer(mode, host, port, alert).start()
