"""The TCP step: one connect() to one address, classified."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from probes.errors import classify
from probes.results import StepResult, format_endpoint
from probes.taxonomy import OK, Step


async def connect(
    address: str, port: int, timeout: float
) -> tuple[StepResult, socket.socket | None]:
    """Open a TCP connection to `address:port`.

    Returns the step result and, on success, the connected non-blocking socket, which the
    caller owns (the TLS step runs its handshake on it).
    """
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    endpoint = format_endpoint(address, port)
    start = time.perf_counter()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except (OSError, TimeoutError) as exc:
        sock.close()
        code, detail = classify(Step.TCP, exc)
        return StepResult(Step.TCP, code, endpoint, time.perf_counter() - start, detail), None
    except BaseException:
        sock.close()
        raise
    return StepResult(Step.TCP, OK, endpoint, time.perf_counter() - start), sock
