"""Raw TCP servers that misbehave where a censor would: after the client's first flight.

The client's first flight is its TLS ClientHello (or, for plain HTTP, its request), so the
same server yields the TLS-stage failure for an https target and the HTTP-stage one for an
http target:

- `reset`: read it, then reset the connection (SO_LINGER 0, then close: the kernel sends RST);
- `eof`: read it, then close cleanly (FIN);
- `silent`: accept and never send anything;
- `alert`: read it, then send a fatal TLS alert record and close;
- `hello-stall`: read the ClientHello, answer with a real ServerHello record only, then stay
  silent: a peer (or middlebox) that stalls the handshake half way;
- `http403`: read it, then answer in plain text `HTTP/1.1 403 Forbidden` and close, as an
  HTTP proxy in the path does to a ClientHello it will not pass.

`Blackhole` is a listening port that drops every SYN, as a censor's blackhole route does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import struct

import trustme

from simlab.certs import server_context
from simlab.net import TcpService, bind_socket

RAW_MODES = ("reset", "eof", "silent", "alert", "hello-stall", "http403")
_RECORD_HEADER = 5
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
        if self.mode == "hello-stall":
            writer.write(server_hello(await read_record(reader)))
            await writer.drain()
        if self.mode in ("silent", "hello-stall"):
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


async def read_record(reader: asyncio.StreamReader) -> bytes:
    """One whole TLS record (header and body), however the client's segments split it."""
    header = await reader.readexactly(_RECORD_HEADER)
    length = struct.unpack("!H", header[3:5])[0]
    return header + await reader.readexactly(length)


@functools.cache
def _stall_context() -> ssl.SSLContext:
    # The certificate never reaches the client (only the ServerHello is sent), so any will do.
    return server_context(trustme.CA().issue_cert("stall.test"))


def server_hello(client_hello: bytes) -> bytes:
    """The first record a real TLS server answers `client_hello` with: its ServerHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _stall_context().wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(client_hello)
    # The server's flight comes out, then it waits for the client's next one.
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    flight = outgoing.read()
    length = struct.unpack("!H", flight[3:5])[0]
    return flight[: _RECORD_HEADER + length]


class Blackhole:
    """A TCP port whose SYNs are dropped: connects to it time out, as through a blackhole.

    A listening socket with a zero backlog, its accept queue filled by one connection of our
    own and never accepted: the kernel drops every further SYN (no RST, no ICMP). Nothing
    runs; `close()` releases the port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listener = bind_socket(host, port, socket.SOCK_STREAM)
        self.listener.listen(0)
        self.host, self.port = host, self.listener.getsockname()[1]
        self._plug = socket.create_connection((host, self.port), timeout=5)

    def close(self) -> None:
        """Release the port."""
        self._plug.close()
        self.listener.close()


async def start_raw(
    mode: str, host: str = "127.0.0.1", port: int = 0, alert: int = HANDSHAKE_FAILURE
) -> RawServer:
    """Start a misbehaving TCP server; see `RawServer`."""
    return await RawServer(mode, host, port, alert).start()
