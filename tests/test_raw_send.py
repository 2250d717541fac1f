"""probes.raw.send.sendto: a send that would block waits for the socket to drain, on
asyncio's loop and on uvloop's (which has no `sock_sendto`)."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from pathlib import Path

import pytest

from agent import eventloop
from probes.raw.send import sendto

LOOPS = ["asyncio", *(["uvloop"] if importlib.util.find_spec("uvloop") else [])]


def _fill(sender: socket.socket, path: str) -> int:
    """Send until the receiver's queue is full; how many were queued."""
    queued = 0
    while True:
        try:
            sender.sendto(b"x", path)
        except BlockingIOError:
            return queued
        queued += 1


async def _blocked_send_completes(path: str) -> list[bytes]:
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(path)
        receiver.setblocking(False)
        sender.setblocking(False)
        queued = _fill(sender, path)
        send = asyncio.ensure_future(sendto(sender, b"last", path))
        await asyncio.sleep(0.05)
        assert not send.done()  # waiting for room, not spinning, not dropped
        received = [receiver.recv(16) for _ in range(queued)]
        await asyncio.wait_for(send, 5)
        await asyncio.sleep(0)
        return [*received, receiver.recv(16)]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_blocked_send_waits_and_is_delivered(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(eventloop.ENV, loop)
    received = eventloop.run(_blocked_send_completes(str(tmp_path / "sock")))
    assert received[-1] == b"last"
    assert set(received[:-1]) == {b"x"}


@pytest.mark.parametrize("loop", LOOPS)
def test_errors_are_raised(loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def to_nowhere() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            await sendto(sender, b"x", str(tmp_path / "absent"))

    monkeypatch.setenv(eventloop.ENV, loop)
    with pytest.raises(FileNotFoundError):
        eventloop.run(to_nowhere())
