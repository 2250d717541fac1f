"""A fake Telegram data centre: MTProto's first, unencrypted exchange over TCP.

A client opens the connection with its transport's tag: 0xef for the abridged transport
(then each packet is a length in 4-byte words, one byte, or 0x7f and three bytes, and the
payload), 0xeeeeeeee for the intermediate one (then a 4-byte little-endian length and the
payload). Its first message is the unencrypted `req_pq_multi`:

    auth_key_id int64 = 0 | message_id int64 | message_length int32 | 0xbe7e8ef1 | nonce int128

and a DC answers, in the same framing, with `resPQ`: its constructor 0x05162463, the client's
nonce, a server nonce, `pq` as TL bytes and a vector<long> of RSA key fingerprints. That nonce
echo is what proves a peer is a DC and not any box that accepts TCP. Anything else (another
transport tag, a malformed or unexpected message) closes the connection.

https://core.telegram.org/mtproto/mtproto-transports, https://core.telegram.org/mtproto/auth_key
"""

from __future__ import annotations

import asyncio
import os
import struct
import time

from simlab.net import TcpService

ABRIDGED_TAG = b"\xef"
INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
# The example values of Telegram's auth_key documentation: pq = 1229739323 * 1402015859.
PQ = 0x17ED48941A08F981
FINGERPRINT = 0xC3B42B026CE86B21
_HEADER = struct.Struct("<qqi")  # auth_key_id, message_id, message_length
_REQ_PQ_LENGTH = 4 + 16
# Far above any auth message; a bigger length is garbage, not a reason to buffer it.
_MAX_PACKET = 1 << 16
# A client that never sends its tag is let go.
_TAG_TIMEOUT = 10.0


def tl_bytes(data: bytes) -> bytes:
    """TL `bytes` (short form, up to 253 bytes): length byte, data, zero padding to 4 bytes."""
    if len(data) > 253:
        raise ValueError("long TL bytes are not needed here")
    raw = bytes([len(data)]) + data
    return raw + b"\0" * (-len(raw) % 4)


def res_pq(nonce: bytes, server_nonce: bytes) -> bytes:
    """The body of a `resPQ` answering `nonce`."""
    return (
        struct.pack("<I", RES_PQ)
        + nonce
        + server_nonce
        + tl_bytes(PQ.to_bytes(8, "big"))
        + struct.pack("<Iiq", VECTOR, 1, FINGERPRINT - (1 << 64))
    )


def server_message_id() -> int:
    """A server message id: unix time * 2^32, and 1 mod 4 as answers to a request are."""
    return (int(time.time() * (1 << 32)) & ~3) | 1


def answer(payload: bytes) -> bytes | None:
    """The unencrypted `resPQ` message for a `req_pq_multi` payload, or None for anything else."""
    if len(payload) != _HEADER.size + _REQ_PQ_LENGTH:
        return None
    auth_key_id, _, length = _HEADER.unpack_from(payload)
    body = payload[_HEADER.size :]
    if auth_key_id != 0 or length != _REQ_PQ_LENGTH:
        return None
    if struct.unpack_from("<I", body)[0] != REQ_PQ_MULTI:
        return None
    reply = res_pq(body[4:20], os.urandom(16))
    return _HEADER.pack(0, server_message_id(), len(reply)) + reply


async def _payload(reader: asyncio.StreamReader, size: int) -> bytes:
    """`size` bytes, or none (garbage, which closes) for a size no auth message has."""
    return await reader.readexactly(size) if size <= _MAX_PACKET else b""


class _Abridged:
    @staticmethod
    async def read(reader: asyncio.StreamReader) -> bytes:
        words = (await reader.readexactly(1))[0] & 0x7F  # the top bit asks for a quick ack
        if words == 0x7F:
            words = int.from_bytes(await reader.readexactly(3), "little")
        return await _payload(reader, words * 4)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        words = len(payload) // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return head + payload


class _Intermediate:
    @staticmethod
    async def read(reader: asyncio.StreamReader) -> bytes:
        size = int.from_bytes(await reader.readexactly(4), "little")
        return await _payload(reader, size)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "little") + payload


async def _transport(reader: asyncio.StreamReader) -> type[_Abridged | _Intermediate] | None:
    """The transport the client's tag names, or None for another one (or garbage)."""
    first = await reader.readexactly(1)
    if first == ABRIDGED_TAG:
        return _Abridged
    if first + await reader.readexactly(3) == INTERMEDIATE_TAG:
        return _Intermediate
    return None


class MtprotoServer(TcpService):
    """Answer `req_pq_multi` with `resPQ` on `host:port`, as a Telegram DC does (see the module).

    `answered` counts the requests answered.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.answered = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_TAG_TIMEOUT):
                transport = await _transport(reader)
        except TimeoutError:
            return
        if transport is None:
            return
        while True:
            reply = answer(await transport.read(reader))
            if reply is None:
                return
            writer.write(transport.frame(reply))
            await writer.drain()
            self.answered += 1


async def start_mtproto(host: str = "127.0.0.1", port: int = 0) -> MtprotoServer:
    """Start a fake Telegram DC; see `MtprotoServer`."""
    return await MtprotoServer(host, port).start()
