"""Every resolver transport against real loopback servers, and hostile DNS/DoH peers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web

from probes import dns as dnsprobe
from probes.bogons import BogonFilter
from probes.dns import DnsClient, Resolver
from probes.results import StepResult
from probes.tls import make_context
from simlab import Pki, Zone, server_context, start_dns, start_doh, start_raw
from simlab.net import StreamServer, bind_socket

Handler = Callable[[web.Request], Awaitable[web.Response]]
LOOPBACK = BogonFilter(["127.0.0.0/8", "::1/128"])
ZONE = Zone({"site.test": ["127.0.0.7", "::1"], "gone.test": "nxdomain"})


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[dict[str, int]]:
    pki = Pki(tmp_path)
    plain = await start_dns(ZONE)
    doh = await start_doh(ZONE, server_context(pki.issue("127.0.0.1")))
    # DNS over TLS is the TCP framing inside TLS: the same stream handler behind a TLS socket.
    dot = StreamServer(plain._serve_stream)
    dot_sock = bind_socket("127.0.0.1", 0, socket.SOCK_STREAM)
    await dot.start(dot_sock, server_context(pki.issue("dot.test")))
    ports = {"udp": plain.port, "doh": doh.port, "dot": dot_sock.getsockname()[1]}
    ports["ca"] = str(pki.ca_file)  # type: ignore[assignment]
    yield ports
    await dot.close()
    await doh.close()
    await plain.close()


def client(kind: str, ports: dict, **extra: object) -> DnsClient:
    if kind == "doh":
        resolver = Resolver("doh", url=f"https://127.0.0.1:{ports['doh']}/dns-query")
    elif kind == "dot":
        resolver = Resolver("dot", (("127.0.0.1", ports["dot"]),), server_name="dot.test")
    else:
        resolver = Resolver(kind, (("127.0.0.1", ports["udp"]),))
    return DnsClient(
        resolver, timeout=2, injection_window=0.05, ssl_context=make_context(ports["ca"]), **extra
    )


@pytest.mark.parametrize("kind", ["udp", "tcp", "dot", "doh"])
async def test_each_transport_resolves_and_classifies(servers: dict, kind: str) -> None:
    dns_client = client(kind, servers)
    try:
        found = await dns_client.resolve("site.test", LOOPBACK)
        missing = await dns_client.resolve("gone.test", LOOPBACK)
    finally:
        await dns_client.aclose()
    assert found.result == "ok"
    assert sorted(found.facts.addresses) == ["127.0.0.7", "::1"]
    assert found.facts.resolver == kind
    assert missing.result == "dns_nxdomain"


async def test_dot_with_the_wrong_server_name_is_not_trusted(servers: dict) -> None:
    resolver = Resolver("dot", (("127.0.0.1", servers["dot"]),), server_name="other.test")
    dns_client = DnsClient(resolver, timeout=2, ssl_context=make_context(servers["ca"]))
    answer = await dns_client.resolve("site.test", LOOPBACK)
    assert answer.result == "dns_error"
    assert "mismatch" in answer.detail.lower()


async def test_system_resolver_reads_resolv_conf(
    servers: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    monkeypatch.setattr(dnsprobe, "RESOLV_CONF", str(conf))
    # resolv.conf cannot carry a port; the test server's port stands in for 53.
    monkeypatch.setattr(dnsprobe, "SYSTEM_PORT", servers["udp"])
    dns_client = DnsClient(Resolver("system"), timeout=2, injection_window=0.05)
    answer = await dns_client.resolve("site.test", LOOPBACK)
    assert answer.result == "ok"
    assert answer.facts.resolver == "system"


async def test_failover_to_the_next_server(servers: dict) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never read: queries to it go unanswered
    try:
        resolver = Resolver(
            "udp", (("127.0.0.1", silent.getsockname()[1]), ("127.0.0.1", servers["udp"]))
        )
        answer = await DnsClient(resolver, timeout=0.3, injection_window=0.05).resolve(
            "site.test", LOOPBACK
        )
    finally:
        silent.close()
    assert answer.result == "ok"


class _Garbage(asyncio.DatagramProtocol):
    """Answers each query with junk, a response to another query, then the real answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.transport.sendto(b"\x00\x01garbage", addr)
        other = dns.message.make_response(dns.message.make_query("other.test", "A"))
        self.transport.sendto(other.to_wire(), addr)
        real = dns.message.make_response(query)
        if query.question[0].rdtype == dns.rdatatype.A:
            real.answer.append(
                dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "127.0.0.8")
            )
        self.transport.sendto(real.to_wire(), addr)


async def test_garbage_datagrams_are_ignored_not_fatal() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Garbage, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        resolver = Resolver("udp", (("127.0.0.1", port),))
        answer = await DnsClient(resolver, timeout=1, injection_window=0.1).resolve(
            "site.test", LOOPBACK
        )
    finally:
        transport.close()
    assert answer.result == "ok"
    assert list(answer.facts.addresses) == ["127.0.0.8"]
    # The answer to another query (one per A and AAAA) is counted as evidence, not used.
    assert answer.facts.stray_responses == 2


async def ask_doh(handler: Handler) -> StepResult:
    """Resolve site.test over DoH against `handler` on loopback. Plain http:// is enough:
    what is tested is how the answer is handled."""
    app = web.Application()
    app.router.add_post("/dns-query", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        dns_client = DnsClient(Resolver("doh", url=f"http://127.0.0.1:{port}/dns-query"), timeout=2)
        answer = await dns_client.resolve("site.test", LOOPBACK)
        await dns_client.aclose()
    finally:
        await runner.cleanup()
    return answer


def other_answer() -> bytes:
    """A well-formed DNS answer, to a query nobody sent."""
    return dns.message.make_response(dns.message.make_query("other.test", "A")).to_wire()


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [(500, b"", "DoH server answered HTTP 500"),
     (200, b"\xff" * 40, "DoH answer is not a DNS message: "),
     (200, b"x" * 70000, "DoH answer larger than a DNS message can be"),
     # The largest a DNS message can be is still read as one.
     (200, b"\xff" * 65535, "DoH answer is not a DNS message: "),
     (200, other_answer(), "DoH answer does not match the query"),
     # A redirect is not followed: a DoH server has no business sending one.
     (302, b"", "DoH server answered HTTP 302")],
)  # fmt: skip
async def test_hostile_doh_server_gives_dns_error(status: int, body: bytes, detail: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            status=status,
            body=body,
            content_type="application/dns-message",
            headers={"Location": "/elsewhere"},
        )

    answer = await ask_doh(handler)
    assert answer.result == "dns_error"
    assert answer.detail.startswith(detail)


async def test_doh_speaks_rfc_8484(tmp_path: Path) -> None:
    """A DoH POST says what it sends and what it takes (RFC 8484 section 4.1); a server that
    insists gets its answer."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({k.lower(): v.lower() for k, v in request.headers.items()})
        query = dns.message.from_wire(await request.read())
        answer = dns.message.make_response(query)
        answer.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "127.0.0.9")
        )
        return web.Response(body=answer.to_wire(), content_type="application/dns-message")

    answer = await ask_doh(handler)
    assert answer.result == "ok"
    assert seen
    for headers in seen:
        assert headers["content-type"] == "application/dns-message"
        assert headers["accept"] == "application/dns-message"


async def test_a_doh_server_hanging_up_on_one_query_leaves_the_other_answer() -> None:
    """aiohttp's own errors (a disconnect is not an OSError) are a failed query like any
    other: the AAAA answer still makes the lookup `ok`."""

    async def handler(request: web.Request) -> web.Response:
        query = dns.message.from_wire(await request.read())
        if query.question[0].rdtype == dns.rdatatype.A:
            assert request.transport is not None
            request.transport.close()  # hang up on the A query alone
        answer = dns.message.make_response(query)
        answer.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "AAAA", "::1"))
        return web.Response(body=answer.to_wire(), content_type="application/dns-message")

    answer = await ask_doh(handler)
    assert (answer.result, answer.facts.addresses) == ("ok", ("::1",))


async def test_doh_without_a_ca_file_still_verifies_the_certificate(servers: dict) -> None:
    """No configured CA means the system's trust store, never no verification: the lab's
    own CA is not in it, so its DoH server is refused."""
    resolver = Resolver("doh", url=f"https://127.0.0.1:{servers['doh']}/dns-query")
    dns_client = DnsClient(resolver, timeout=2)
    answer = await dns_client.resolve("site.test", LOOPBACK)
    await dns_client.aclose()
    assert answer.result == "dns_error"
    assert "certificate" in answer.detail.lower()


async def test_a_resolver_port_that_is_closed_is_refused() -> None:
    """The resolver host answers the datagram with ICMP port unreachable: `dns_refused`, not
    a timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dns_client = DnsClient(Resolver("udp", (("127.0.0.1", port),)), timeout=5)
    answer = await dns_client.resolve("site.test", LOOPBACK)
    assert answer.result == "dns_refused"


async def test_a_resolver_with_no_server_says_so() -> None:
    """A client with no server to ask (the config refuses one) sends nothing and says so."""
    answer = await DnsClient(Resolver("udp", ()), timeout=1).resolve("site.test", LOOPBACK)
    assert (answer.result, answer.detail) == ("dns_error", "no nameserver configured")


@pytest.mark.parametrize("kind", ["tcp", "dot"])
async def test_a_silent_stream_resolver_times_out_per_query(kind: str) -> None:
    """A TCP or DoT resolver that accepts and never answers: the query's own timeout ends
    it, as dnspython reports it, not the safety bound around the whole lookup ("timed
    out"), which only a lost per-query timeout would reach."""
    silent = await start_raw("silent", "127.0.0.1")
    try:
        client = DnsClient(Resolver(kind, (("127.0.0.1", silent.port),)), timeout=0.3)
        answer = await client.resolve("site.test", LOOPBACK)
    finally:
        await silent.close()
    assert answer.result == "dns_timeout"
    assert answer.detail.startswith("The DNS operation timed out")
