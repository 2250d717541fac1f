"""The TLS step: a handshake with SNI on an already connected socket.

The handshake is driven through `ssl.MemoryBIO` over asyncio socket calls rather than
`loop.start_tls`, so that what the network did (a RST, a clean FIN, silence, an alert) reaches
the classifier as itself instead of as a generic "connection lost".
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from probes.connection import Connection
from probes.errors import Outcome, measure
from probes.results import StepResult, TlsFacts
from probes.taxonomy import Step

_READ_SIZE = 65536


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


async def _handshake(sock: socket.socket, ctx: ssl.SSLContext, server_name: str) -> ssl.SSLObject:
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            await _pump(sock, outgoing)
            data = await loop.sock_recv(sock, _READ_SIZE)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            continue
        await _pump(sock, outgoing)
        return tls


def _facts(tls: ssl.SSLObject) -> TlsFacts:
    cert = tls.getpeercert() or {}
    not_after = cert.get("notAfter")
    cipher = tls.cipher()
    return TlsFacts(
        version=tls.version(),
        cipher=cipher[0] if cipher else None,
        cert_not_after=ssl.cert_time_to_seconds(not_after) if isinstance(not_after, str) else None,
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
        conn.tls = await _handshake(conn.sock, ctx, server_name)
        facts = _facts(conn.tls)
        return Outcome(detail=f"{facts.version}, SNI {server_name}", facts=facts)

    return await measure(Step.TLS, conn.endpoint, timeout, work)
