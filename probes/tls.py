"""The TLS step: a handshake with SNI on an already connected socket.

The handshake is driven through `ssl.MemoryBIO` over asyncio socket calls rather than
`loop.start_tls`, so that what the network did (a RST, a clean FIN, silence, an alert) reaches
the classifier as itself instead of as a generic "connection lost".
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass

from probes.errors import classify
from probes.results import StepResult
from probes.taxonomy import OK, Step

_READ_SIZE = 65536


def make_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system store plus the operator's extra anchors."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


@dataclass(slots=True)
class TlsInfo:
    """Facts about a completed handshake."""

    version: str | None
    cipher: str | None
    not_after: float | None


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


def _info(tls: ssl.SSLObject) -> TlsInfo:
    cert = tls.getpeercert() or {}
    not_after = cert.get("notAfter")
    cipher = tls.cipher()
    return TlsInfo(
        version=tls.version(),
        cipher=cipher[0] if cipher else None,
        not_after=ssl.cert_time_to_seconds(not_after) if isinstance(not_after, str) else None,
    )


async def handshake(
    sock: socket.socket,
    server_name: str,
    ctx: ssl.SSLContext,
    timeout: float,
    endpoint: str,
) -> StepResult:
    """Run a TLS handshake with SNI `server_name` over the connected socket `sock`.

    The certificate is validated for `server_name` against `ctx`'s trust store. The socket is
    left open; the caller closes it. `endpoint` is only reported.
    """
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            tls = await _handshake(sock, ctx, server_name)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        code, detail = classify(Step.TLS, exc)
        return StepResult(Step.TLS, code, endpoint, time.perf_counter() - start, detail)
    info = _info(tls)
    data: dict[str, object] = {"version": info.version, "cipher": info.cipher}
    if info.not_after is not None:
        data["cert_not_after"] = info.not_after
    detail = f"{info.version}, SNI {server_name}"
    return StepResult(Step.TLS, OK, endpoint, time.perf_counter() - start, detail, data)
