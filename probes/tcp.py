"""The TCP step: one connect() to one address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from probes.connection import Connection, PlainStream
from probes.errors import Outcome, measure
from probes.results import StepResult
from probes.taxonomy import Step


async def connect(conn: Connection) -> None:
    """Open `conn`'s socket and connect it; `conn.stream` is then the plain stream. Raises on
    failure (the caller's boundary classifies); `conn` owns the socket either way."""
    family = socket.AF_INET6 if ipaddress.ip_address(conn.address).version == 6 else socket.AF_INET
    conn.sock = socket.socket(family, socket.SOCK_STREAM)
    conn.sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(conn.sock, (conn.address, conn.port))
    conn.stream = PlainStream(conn.sock)


async def run(conn: Connection, timeout: float) -> StepResult:
    """The TCP step: connect to `conn`'s address and port; on success `conn.sock` is the
    connected, non-blocking socket the later steps use. The caller closes `conn`."""

    async def work() -> Outcome:
        await connect(conn)
        return Outcome()

    return await measure(Step.TCP, conn.endpoint, timeout, work)


async def probe(address: str, port: int, timeout: float) -> StepResult:
    """The TCP step to `address`:`port` on a connection of its own, closed at once (a prefix
    sample's connect): the step's boundary classifies any failure, a local one like running
    out of descriptors too."""
    conn = Connection(address, port)
    try:
        return await run(conn, timeout)
    finally:
        conn.close()
