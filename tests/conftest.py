"""Shared fixtures: the loopback lab (real servers on 127.0.0.1) and agent configs for it,
simlab servers and UDP servers started per test, and a test PKI.

The servers run on an event loop in a background thread for the whole session, so that both
async tests (talking to them with real clients) and sync tests (running the agent's CLI as a
subprocess) can use them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simlab import Pki
from simlab.background import BackgroundLoop
from simlab.loopback import LoopbackLab


@pytest.fixture(scope="session")
def server_loop() -> Iterator[BackgroundLoop]:
    """The background event loop hosting the test servers."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def session_lab(
    server_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoopbackLab]:
    """Every loopback server, started once per session."""
    lab = server_loop.run(LoopbackLab(tmp_path_factory.mktemp("loopback-lab")).start())
    yield lab
    server_loop.run(lab.close())


@pytest.fixture
def lab(session_lab: LoopbackLab, server_loop: BackgroundLoop) -> Iterator[LoopbackLab]:
    """The loopback lab; fails the test if a server callback raised while it ran."""
    yield session_lab
    errors = list(server_loop.errors)
    server_loop.errors.clear()
    assert not errors, f"a test server raised: {errors}"


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(lab: LoopbackLab, tmp_path: Path) -> WriteConfig:
    """Write an agent config for `targets` (list of target dicts) and return its path.

    Keyword arguments go to `LoopbackLab.config` (e.g. `control=False`).
    """

    def write(targets: list[dict[str, Any]], name: str = "agent.yaml", **options: Any) -> Path:
        return lab.write_config(tmp_path / name, targets, **options)

    return write


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Any]]:
    """Start simlab servers; all closed at the end."""
    started: list[Any] = []

    async def start(factory: Any, *args: Any, **kwargs: Any) -> Any:
        server = await factory(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.close()


@pytest.fixture
async def udp() -> AsyncIterator[Callable[[asyncio.DatagramProtocol], Awaitable[int]]]:
    """Start UDP servers on loopback speaking the given protocol; their ports; all closed
    at the end."""
    transports: list[asyncio.BaseTransport] = []

    async def start(protocol: asyncio.DatagramProtocol) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return transport.get_extra_info("sockname")[1]

    yield start
    for transport in transports:
        transport.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh test CA (simlab's trustme PKI) in the test's directory."""
    return Pki(tmp_path)


# Answers one TCP connection on loopback (a raw HTTP peer written by the test).
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start TCP servers on 127.0.0.1 running a handler per connection; their ports."""
    started: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        started.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in started:
        server.close()
