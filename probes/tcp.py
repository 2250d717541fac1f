"""The TCP step: one connect() to one address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from probes.connection import Connection
from probes.errors import Outcome, measure
from probes.results import StepResult
from probes.taxonomy import Step


async def run(conn: Connection, timeout: float) -> StepResult:
    """Connect to `conn`'s address and port; on success `conn.sock` is the connected,
    non-blocking socket the later steps use. The caller closes `conn`."""
    family = socket.AF_INET6 if ipaddress.ip_address(conn.address).version == 6 else socket.AF_INET

    async def work() -> Outcome:
        conn.sock = socket.socket(family, socket.SOCK_STREAM)
        conn.sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(conn.sock, (conn.address, conn.port))
        return Outcome()

    return await measure(Step.TCP, conn.endpoint, timeout, work)
