"""An SNI filter, as a censor's middlebox does it: read the client's first flight, reset the
connection when its ClientHello names a blocked server, and otherwise relay the connection
untouched to a real server behind it.

Unlike the raw `reset` mode (every connection reset), this one lets the agent's SNI re-check
(an innocuous name to the same address) get through, so the lab shows SNI-based filtering.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable

from simlab.tcp import RawServer, reset

_READ_LIMIT = 65536
_HANDSHAKE, _CLIENT_HELLO, _SERVER_NAME = 22, 1, 0


def client_hello_sni(data: bytes) -> str | None:
    """The server name in a TLS ClientHello record, or None (no SNI, not a ClientHello, or
    cut short)."""
    if len(data) < 9 or data[0] != _HANDSHAKE or data[5] != _CLIENT_HELLO:
        return None
    # record header (5), handshake header (4), version (2), random (32)
    at = 5 + 4 + 2 + 32
    try:
        at += 1 + data[at]  # session id
        at += 2 + struct.unpack_from("!H", data, at)[0]  # cipher suites
        at += 1 + data[at]  # compression methods
        end = at + 2 + struct.unpack_from("!H", data, at)[0]
        at += 2
        while at + 4 <= end:
            kind, length = struct.unpack_from("!HH", data, at)
            at += 4
            if kind == _SERVER_NAME:
                # server_name_list length (2), name type (1), name length (2), name
                size = struct.unpack_from("!H", data, at + 3)[0]
                return data[at + 5 : at + 5 + size].decode("ascii", "replace").lower()
            at += length
    except (IndexError, struct.error):
        return None
    return None


class SniFilter(RawServer):
    """Listen on `host:port`; reset connections whose SNI is in `blocked` (the raw `reset`
    mode, made selective), relay the others to `upstream` (host, port)."""

    def __init__(
        self,
        blocked: Iterable[str],
        upstream: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__("reset", host, port)
        self.blocked = frozenset(name.lower() for name in blocked)
        self.upstream = upstream
        self.resets = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(_READ_LIMIT)
        if not first:
            return
        if client_hello_sni(first) in self.blocked:
            self.resets += 1
            reset(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on."""
    while data := await source.read(_READ_LIMIT):
        sink.write(data)
        await sink.drain()
    with contextlib.suppress(OSError):
        sink.write_eof()
