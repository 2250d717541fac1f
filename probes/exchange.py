"""The exchange step: proof that the peer is the service, not any box that accepts a SYN.

Over the TCP step's connection it sends a request the service must answer in a way no
generic middlebox can: for Telegram's data centres MTProto's unencrypted `req_pq_multi` with
a fresh random nonce, which a DC answers with `resPQ` echoing the nonce; for other `tcp:`
targets a configured send/expect pair (as the blackbox_exporter's `query_response`).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import time
from dataclasses import dataclass

from probes.connection import Connection
from probes.errors import Outcome, UnexpectedReplyError, measure
from probes.results import StepResult
from probes.taxonomy import Step
from probes.tls import printable

# MTProto constructors (little-endian on the wire) and the intermediate transport's tag.
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
INTERMEDIATE = b"\xee\xee\xee\xee"
# A resPQ is about 84 bytes; a DC answer larger than this is not one.
MAX_MTPROTO_REPLY = 1024
DEFAULT_MAX_REPLY = 4096


@dataclass(frozen=True, slots=True)
class Exchange:
    """What to send and what the answer must match. `kind` is `mtproto` or `bytes`."""

    kind: str
    send: bytes = b""
    expect: re.Pattern[bytes] | None = None
    max_reply: int = DEFAULT_MAX_REPLY


MTPROTO = Exchange("mtproto")


def req_pq_multi(nonce: bytes) -> bytes:
    """An unencrypted `req_pq_multi` in the intermediate transport."""
    message_id = (int(time.time() * 2**32)) & ~3  # server-checked: near now, divisible by 4
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    payload = struct.pack("<qqi", 0, message_id, len(body)) + body
    return INTERMEDIATE + struct.pack("<i", len(payload)) + payload


def check_res_pq(payload: bytes, nonce: bytes) -> None:
    """Raise UnexpectedReplyError unless `payload` is a resPQ echoing `nonce`."""
    if len(payload) == 4:
        (code,) = struct.unpack("<i", payload)
        raise UnexpectedReplyError(f"MTProto transport error {code}")
    if len(payload) < 40:
        raise UnexpectedReplyError(f"reply too short for resPQ: {printable(payload)!r}")
    auth_key_id, _, _, constructor = struct.unpack_from("<qqiI", payload)
    if auth_key_id != 0 or constructor != RES_PQ:
        raise UnexpectedReplyError(f"not a resPQ: {printable(payload)!r}")
    if payload[24:40] != nonce:
        raise UnexpectedReplyError("resPQ does not echo our nonce")


async def _read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


async def _mtproto(sock: socket.socket) -> str:
    loop = asyncio.get_running_loop()
    nonce = os.urandom(16)
    await loop.sock_sendall(sock, req_pq_multi(nonce))
    (length,) = struct.unpack("<i", await _read_exactly(sock, 4))
    if not 4 <= length <= MAX_MTPROTO_REPLY:
        raise UnexpectedReplyError(f"MTProto length {length} out of range")
    check_res_pq(await _read_exactly(sock, length), nonce)
    return "resPQ with our nonce: a Telegram data centre"


async def _send_expect(sock: socket.socket, exchange: Exchange) -> str:
    loop = asyncio.get_running_loop()
    if exchange.send:
        await loop.sock_sendall(sock, exchange.send)
    if exchange.expect is None:
        return "sent"
    reply = b""
    while len(reply) < exchange.max_reply:
        chunk = await loop.sock_recv(sock, exchange.max_reply - len(reply))
        if not chunk:
            break
        reply += chunk
        if exchange.expect.search(reply):
            return f"reply matches /{exchange.expect.pattern.decode('latin-1')}/"
    if not reply:
        raise EOFError("connection closed before any reply")
    raise UnexpectedReplyError(f"reply does not match: {printable(reply)!r}")


async def run(conn: Connection, exchange: Exchange, timeout: float) -> StepResult:
    """Run `exchange` over `conn`'s connected socket."""

    async def work() -> Outcome:
        assert conn.sock is not None, "the exchange runs after a successful tcp step"
        if exchange.kind == "mtproto":
            return Outcome(detail=await _mtproto(conn.sock))
        return Outcome(detail=await _send_expect(conn.sock, exchange))

    return await measure(Step.EXCHANGE, conn.endpoint, timeout, work)
