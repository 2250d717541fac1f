"""Sending a raw packet from the event loop, on any loop."""

from __future__ import annotations

import asyncio
import socket


async def sendto(sock: socket.socket, data: bytes, address: tuple[str, int] | str) -> None:
    """`loop.sock_sendto` for every event loop: uvloop (the `fast` extra) does not implement
    it. A raw send rarely blocks; when it would, wait until the socket is writable. Errors
    (no route, not permitted) are raised as the kernel reports them."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock.sendto(data, address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        writable = loop.create_future()
        loop.add_writer(sock.fileno(), _settle, writable)
        try:
            await writable
        finally:
            loop.remove_writer(sock.fileno())


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
