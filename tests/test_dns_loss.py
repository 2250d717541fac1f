"""Loss is not censorship: a lost datagram is sent again, a truncated answer is fetched over
TCP, and "no answer arrived" is never reported as "the name has no address"."""

from __future__ import annotations

import asyncio
import errno
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from probes.bogons import BogonFilter
from probes.dns import MAX_RESPONSES, DnsClient, Resolver, _UdpCollector, resend_interval
from simlab import start_raw

LOOPBACK = BogonFilter(["127.0.0.0/8"])
ADDRESS = "127.0.0.9"


def answer(query: dns.message.Message, with_record: bool = True) -> dns.message.Message:
    response = dns.message.make_response(query)
    question = query.question[0]
    if with_record and question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", ADDRESS))
    return response


@dataclass
class Scripted(asyncio.DatagramProtocol):
    """A UDP resolver whose `reply(query, nth)` decides what the nth datagram of that query
    type gets: a message, or None (dropped, as a lossy path would)."""

    reply: Callable[[dns.message.Message, int], dns.message.Message | None]
    seen: Counter[int] = field(default_factory=Counter)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        qtype = query.question[0].rdtype
        self.seen[qtype] += 1
        response = self.reply(query, self.seen[qtype])
        if response is not None:
            self.transport.sendto(response.to_wire(), addr)


async def resolve(port: int, timeout: float = 1.5) -> object:
    resolver = Resolver("udp", (("127.0.0.1", port),))
    client = DnsClient(resolver, timeout=timeout, injection_window=0.05)
    return await client.resolve("site.test", LOOPBACK)


async def test_a_lost_query_is_sent_again_within_the_timeout(udp) -> None:
    server = Scripted(lambda q, nth: None if nth == 1 else answer(q))
    result = await resolve(await udp(server))
    assert result.result == "ok"
    assert list(result.facts.addresses) == [ADDRESS]
    assert server.seen[dns.rdatatype.A] >= 2


async def test_resends_stop_at_the_timeout(udp) -> None:
    server = Scripted(lambda q, nth: None)
    timeout = 0.9
    result = await resolve(await udp(server), timeout=timeout)
    assert result.result == "dns_timeout"
    # About timeout / interval sends per query type, never an unbounded stream.
    assert 2 <= server.seen[dns.rdatatype.A] <= timeout / resend_interval(timeout) + 1


async def test_lost_a_answer_beside_empty_aaaa_is_a_timeout_not_no_answer(udp) -> None:
    def reply(query: dns.message.Message, nth: int) -> dns.message.Message | None:
        return None if query.question[0].rdtype == dns.rdatatype.A else answer(query)

    result = await resolve(await udp(Scripted(reply)), timeout=0.6)
    assert result.result == "dns_timeout"


async def test_empty_answers_to_both_queries_are_no_answer(udp) -> None:
    result = await resolve(await udp(Scripted(lambda q, nth: answer(q, with_record=False))))
    assert result.result == "dns_no_answer"


async def test_nxdomain_speaks_for_the_name_even_if_the_other_query_was_lost(udp) -> None:
    def reply(query: dns.message.Message, nth: int) -> dns.message.Message | None:
        if query.question[0].rdtype == dns.rdatatype.A:
            return None
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    import dns.rcode

    result = await resolve(await udp(Scripted(reply)), timeout=0.6)
    assert result.result == "dns_nxdomain"


def truncated(query: dns.message.Message, nth: int) -> dns.message.Message:
    """An answer too large for UDP: TC set, no records."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    return response


async def beside_tcp(
    start_tcp: Callable[[], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]],
    protocol: Callable[[], Scripted],
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """A TCP server and a UDP one on its port, as a resolver serves both: (port, close). A
    port free for TCP may be taken for UDP by another process: then another port."""
    loop = asyncio.get_running_loop()
    for _ in range(5):
        port, close_tcp = await start_tcp()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                protocol, local_addr=("127.0.0.1", port)
            )
        except OSError as exc:
            await close_tcp()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue

        return port, functools.partial(_close_both, transport, close_tcp)
    raise RuntimeError("no port free for both TCP and UDP")


async def _close_both(
    transport: asyncio.BaseTransport, close_tcp: Callable[[], Awaitable[None]]
) -> None:
    transport.close()
    await close_tcp()


@dataclass
class ForgingBeforeTruncated(Scripted):
    """An injector on the path answers first, with a whole (untruncated) forged answer."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        forged = dns.message.make_response(dns.message.from_wire(data))
        question = forged.question[0]
        if question.rdtype == dns.rdatatype.A:
            forged.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.66"))
        self.transport.sendto(forged.to_wire(), addr)
        super().datagram_received(data, addr)


@pytest.mark.parametrize(
    ("udp_server", "code"), [(Scripted, "ok"), (ForgingBeforeTruncated, "dns_injected")]
)
async def test_a_truncated_answer_is_fetched_over_tcp(
    udp_server: Callable[..., Scripted], code: str
) -> None:
    """UDP answers carry TC and no records; the full answer is only on TCP (same port). A
    forged whole UDP answer beside them stays, and differs from the TCP one: injection."""

    async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(2), "big")
        query = dns.message.from_wire(await reader.readexactly(length))
        wire = answer(query).to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        writer.close()

    async def start_tcp() -> tuple[int, Callable[[], Awaitable[None]]]:
        tcp = await asyncio.start_server(serve_tcp, "127.0.0.1", 0)

        async def close() -> None:
            tcp.close()

        return tcp.sockets[0].getsockname()[1], close

    port, close = await beside_tcp(start_tcp, lambda: udp_server(truncated))
    try:
        result = await resolve(port)
    finally:
        await close()
    assert result.result == code
    if code == "ok":
        assert list(result.facts.addresses) == [ADDRESS]


def test_the_resend_pace_is_a_second_or_three_tries_within_the_timeout() -> None:
    assert resend_interval(5.0) == 1.0
    assert resend_interval(3.0) == 1.0
    assert resend_interval(0.9) == pytest.approx(0.3)


@dataclass
class Sloppy(Scripted):
    """Two forged answers with a wrong transaction id before each real one, as a sloppy
    injector sends them."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        for _ in range(2):
            forged = answer(query)
            forged.id = (query.id + 1) % 65536
            self.transport.sendto(forged.to_wire(), addr)
        super().datagram_received(data, addr)


async def test_every_stray_answer_is_counted(udp) -> None:
    server = Sloppy(lambda q, nth: answer(q))
    result = await resolve(await udp(server))
    assert result.result == "ok"
    assert result.facts.stray_responses == 2 * sum(server.seen.values())


async def test_a_query_waits_for_a_slot_of_the_concurrency_bound(udp) -> None:
    """The agent's bound on work in flight covers DNS queries too: none is sent while the
    only slot is taken, and it goes out once the slot is free."""
    server = Scripted(lambda q, nth: answer(q))
    resolver = Resolver("udp", (("127.0.0.1", await udp(server)),))
    slots = asyncio.Semaphore(1)
    client = DnsClient(resolver, timeout=1.5, injection_window=0.05, limiter=slots)
    async with slots:
        lookup = asyncio.create_task(client.resolve("site.test", LOOPBACK))
        await asyncio.sleep(0.3)
        assert sum(server.seen.values()) == 0
    result = await lookup
    assert result.result == "ok"


async def test_a_silent_tcp_retry_times_out_per_query() -> None:
    """A truncated UDP answer, and nothing on TCP: the retry's own timeout ends it, as
    dnspython reports it, not the safety bound around the lookup ("timed out"), and what
    UDP did say is kept (issue 22: it was thrown away)."""

    async def start_tcp() -> tuple[int, Callable[[], Awaitable[None]]]:
        silent = await start_raw("silent", "127.0.0.1")
        return silent.port, silent.close

    port, close = await beside_tcp(start_tcp, lambda: Scripted(truncated))
    try:
        result = await resolve(port, timeout=0.3)
    finally:
        await close()
    assert result.result == "dns_timeout"
    size = len(truncated(dns.message.make_query("site.test", "A"), 1).to_wire())
    assert result.detail.startswith(
        f"UDP answer truncated ({size} bytes), its TCP retry failed: The DNS operation timed out"
    )
    assert result.facts.truncated_udp_bytes == size
    assert result.to_json()["data"]["truncated_udp_bytes"] == size


async def test_a_flood_of_answers_keeps_only_the_first_few() -> None:
    """Two differing answers already prove injection: a flood costs no memory."""
    query = dns.message.make_query("site.test", "A")
    collector = _UdpCollector(query)
    for _ in range(MAX_RESPONSES + 3):
        collector.datagram_received(answer(query).to_wire(), ("127.0.0.1", 53))
    assert len(collector.responses) == MAX_RESPONSES
