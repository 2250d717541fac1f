"""The TLS step: a handshake with SNI on an already connected socket.

The handshake is driven through `ssl.MemoryBIO` over asyncio socket calls rather than
`loop.start_tls`, so that what the network did (a RST, a clean FIN, silence, an alert) reaches
the classifier as itself instead of as a generic "connection lost".
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from probes.connection import READ_SIZE, Connection
from probes.errors import NotTlsError, Outcome, measure
from probes.results import StepResult, TlsFacts
from probes.taxonomy import Step

# TLS record content types: change_cipher_spec, alert, handshake, application_data.
_TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23})


def make_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system store plus the operator's extra anchors."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


async def _pump(sock: socket.socket, outgoing: ssl.MemoryBIO) -> None:
    data = outgoing.read()
    if data:
        await asyncio.get_running_loop().sock_sendall(sock, data)


@dataclass(slots=True)
class TlsStream:
    """TLS over a connected socket, driven through memory BIOs: what the network does
    (a RST, a FIN, silence) reaches the caller as itself, not as a generic lost connection."""

    sock: socket.socket
    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await _pump(self.sock, self.outgoing)

    async def recv(self, size: int = READ_SIZE) -> bytes:
        """Up to `size` bytes of plaintext; b"" once the peer has closed, with or without a
        close_notify (many servers skip it; what a missing one means is the caller's call)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                data = await loop.sock_recv(self.sock, READ_SIZE)
                if not data:
                    self.incoming.write_eof()
                else:
                    self.incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""


def printable(data: bytes, limit: int = 64) -> str:
    """The first bytes of a peer's answer, safe to put in a detail line."""
    text = data[:limit].decode("latin-1")
    return "".join(c if c.isprintable() else "." for c in text)


def check_record(data: bytes) -> None:
    """Raise NotTlsError unless `data` starts like a TLS record (handshake, alert, change
    cipher spec or application data, version 3.x): a proxy's plaintext HTTP 403 or a captive
    portal's page is a strong sign of interception, worth its own code."""
    if data[0] not in _TLS_CONTENT_TYPES or (len(data) > 1 and data[1] != 3):
        raise NotTlsError(f"answer is not TLS: {printable(data)!r}")


async def start(sock: socket.socket, ctx: ssl.SSLContext, server_name: str) -> TlsStream:
    """Run a handshake with SNI `server_name` on the connected `sock`, validating the
    certificate for that name; raises on failure (the caller's boundary classifies)."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    first = True
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            await _pump(sock, outgoing)
            data = await loop.sock_recv(sock, READ_SIZE)
            if data:
                if first:
                    check_record(data)
                    first = False
                incoming.write(data)
            else:
                incoming.write_eof()
            continue
        await _pump(sock, outgoing)
        return TlsStream(sock, tls, incoming, outgoing)


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def cert_time_to_seconds(text: str) -> int:
    """`ssl.cert_time_to_seconds` for OpenSSL's usual "Nov  5 20:41:37 2027 GMT", without
    `time.strptime` (its locale checks cost more than the rest of the TLS facts); any other
    form goes to the standard library's parser."""
    try:
        month, day, clock, year, zone = text.split()
        hour, minute, second = clock.split(":")
        if zone != "GMT":
            raise ValueError(zone)
        when = datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
        return int(when.timestamp())
    except (ValueError, KeyError):
        return ssl.cert_time_to_seconds(text)


def _facts(tls: ssl.SSLObject) -> TlsFacts:
    cert = tls.getpeercert() or {}
    not_after = cert.get("notAfter")
    cipher = tls.cipher()
    return TlsFacts(
        version=tls.version(),
        cipher=cipher[0] if cipher else None,
        cert_not_after=cert_time_to_seconds(not_after) if isinstance(not_after, str) else None,
        alpn=tls.selected_alpn_protocol(),
        certificate=tls.getpeercert(binary_form=True),
    )


async def run(
    conn: Connection, server_name: str, ctx: ssl.SSLContext, timeout: float
) -> StepResult:
    """Run a TLS handshake with SNI `server_name` over `conn`'s connected socket.

    The certificate is validated for `server_name` against `ctx`'s trust store. On success
    `conn.tls` holds the session; the socket stays open for the caller to close.
    """

    async def work() -> Outcome:
        assert conn.sock is not None, "tls runs after a successful tcp step"
        stream = await start(conn.sock, ctx, server_name)
        conn.stream, conn.tls = stream, stream.tls
        facts = _facts(stream.tls)
        return Outcome(detail=f"{facts.version}, SNI {server_name}", facts=facts)

    return await measure(Step.TLS, conn.endpoint, timeout, work)
