"""simlab's SNI filter: it reads the name from a real ClientHello, resets that name, and
relays any other to the real server behind it."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from simlab import Pki, client_context, server_context, start_web
from simlab.sni import SniFilter, client_hello_sni


def client_hello(name: str) -> bytes:
    """The first flight of Python's TLS client for `name`."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_name_is_read_from_a_real_client_hello() -> None:
    hello = client_hello("Messenger.Test")
    assert client_hello_sni(hello) == "messenger.test"
    for cut in (0, 5, 20, 60):
        assert client_hello_sni(hello[:cut]) is None
    assert client_hello_sni(b"GET / HTTP/1.1\r\n\r\n") is None


async def test_the_named_server_is_reset_and_others_relayed(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    backend = await start_web("valid", ssl_context=server_context(pki.issue("ok.test")))
    sni = await SniFilter(["blocked.test"], ("127.0.0.1", backend.port)).start()
    ctx = client_context(pki.trusted)
    try:
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", sni.port, ssl=ctx, server_hostname="blocked.test"
                ),
                5,
            )
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", sni.port, ssl=ctx, server_hostname="ok.test"), 5
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert response.startswith(b"HTTP/1.1 200")
        assert sni.resets == 1
    finally:
        await sni.close()
        await backend.close()
