"""The simlab servers that misbehave for the fault tests: hello-stall, trickle, Blackhole."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from simlab import Blackhole, client_context, start_raw, start_web
from simlab.certs import Pki
from simlab.tcp import read_record
from simlab.web import TRICKLE_PAUSE

HOST = "127.0.0.1"
HANDSHAKE, SERVER_HELLO = 22, 2


async def test_hello_stall_sends_a_server_hello_and_then_nothing(tmp_path) -> None:
    server = await start_raw("hello-stall")
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context(Pki(tmp_path).trusted).wrap_bio(incoming, outgoing, False, "a.test")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(outgoing.read())
        record = await asyncio.wait_for(read_record(reader), 5)
        assert record[0] == HANDSHAKE
        assert record[5] == SERVER_HELLO
        # The handshake goes no further: nothing follows the ServerHello.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        incoming.write(record)
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()  # the client got a ServerHello and waits for the rest
        writer.close()
    finally:
        await server.close()


async def test_trickle_sends_the_body_a_byte_at_a_time() -> None:
    server = await start_web("trickle")
    try:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: 1048576" in head
        loop = asyncio.get_running_loop()
        start = loop.time()
        body = b""
        while len(body) < 3:
            body += await asyncio.wait_for(reader.read(10), 5)
        assert loop.time() - start >= TRICKLE_PAUSE  # the bytes came apart, not at once
        writer.close()
    finally:
        await server.close()


async def test_a_blackhole_port_never_completes_a_connect() -> None:
    hole = Blackhole(HOST)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(HOST, hole.port), 1.0)
    finally:
        hole.close()
