"""Verdicts that hold on hostile networks, against real loopback servers: a dead link or a
walled garden is not blocking, a box that accepts every SYN proves nothing, a Telegram data
centre must answer as one, one lost packet is not censorship, and a hijacked plain-HTTP site
is caught without a fingerprint."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.once import measure_once
from agent.sinks.prometheus import PrometheusSink
from measure.followups.consistency import PageComparison, inconsistent, page_difference
from measure.report import CycleReport
from probes import exchange
from probes.errors import UnexpectedReplyError
from probes.results import DnsFacts, HttpFacts, StepResult
from probes.taxonomy import Code, Step
from simlab import Pki, Zone, closed_port, server_context, start_dns, start_raw, start_web
from tests.test_dns_loss import Scripted, answer

HOST = "127.0.0.1"
PAGE = "<html><title>The real site</title><p>" + "genuine content " * 40 + "</p></html>"
ISP_PAGE = "<html><title>Provider portal</title><p>ads</p></html>"


def resolver(port: int) -> dict[str, Any]:
    return {"type": "udp", "servers": [f"{HOST}:{port}"]}


async def cycle(
    targets: list[dict[str, Any]],
    test_dns: int,
    control_dns: int | dict[str, Any] | None = None,
    vantage: dict[str, Any] | None = None,
    *,
    bogon_exempt: tuple[str, ...] = ("127.0.0.0/8",),
    ca_file: str | None = None,
    **agent: Any,
) -> CycleReport:
    """One real cycle of the agent's measurement layer against loopback servers (all of
    127/8 is exempt from the bogon check unless `bogon_exempt` says otherwise)."""
    resolvers: dict[str, Any] = {"test": resolver(test_dns), "bogon_exempt": list(bogon_exempt)}
    resolvers["injection_window"] = "50ms"
    if control_dns is not None:
        # A port is a UDP resolver on loopback; a dict is a whole resolver config.
        is_port = isinstance(control_dns, int)
        resolvers["control"] = resolver(control_dns) if is_port else control_dns
    config = parse_config(
        {
            "agent": {"timeout": "1s", "interval": "10s", "jitter": "0s", "listen": None, **agent},
            "resolvers": resolvers,
            "vantage": vantage or {},
            "targets": targets,
            **({"tls": {"ca_file": ca_file}} if ca_file else {}),
        },
        "test.yaml",
    )
    return (await measure_once(config)).cycle


def verdicts(result: CycleReport) -> dict[str, str]:
    return {r.target.name: r.verdict.value for r in result.reports}


async def test_a_walled_garden_is_vantage_down_not_dns_blocking(servers) -> None:
    web = await servers(start_web, "valid", HOST)
    dns_server = await servers(start_dns, Zone({"open.test": [HOST]}))  # all else NXDOMAIN
    targets = [
        {"name": "canary-a", "url": "http://canary-a.test/", "group": "canary"},
        {"name": "canary-b", "url": "http://canary-b.test/", "group": "canary"},
        {"name": "site", "url": "http://site.test/"},
        {"name": "refused", "url": f"http://open.test:{closed_port()}/"},
    ]
    result = await cycle(targets, dns_server.port)
    assert verdicts(result) == {
        "canary-a": "vantage_down",
        "canary-b": "vantage_down",
        "site": "vantage_down",
        # A failure the canaries do not share still speaks.
        "refused": "tcp_ip_blocking",
    }
    site = next(r for r in result.reports if r.target.name == "site")
    assert site.local_verdict == "dns_blocking"
    assert "canary" in (site.note or "")
    assert (result.vantage.canaries, result.vantage.canaries_up) == (2, 0)
    assert result.vantage.connectivity_up is False
    assert result.vantage.canary_failures == ("dns_nxdomain",)
    metrics = PrometheusSink()
    metrics.publish(result)
    assert metrics.registry.get_sample_value("reachprobe_vantage_connectivity_up") == 0
    assert web.port  # the web server only keeps `open.test` honest


async def test_one_working_canary_keeps_blocking_verdicts(servers) -> None:
    web = await servers(start_web, "valid", HOST)
    dns_server = await servers(start_dns, Zone({"canary.test": [HOST]}))
    targets = [
        {"name": "canary", "url": f"http://canary.test:{web.port}/", "group": "canary"},
        {"name": "gone", "url": "http://gone.test/", "group": "canary"},
        {"name": "site", "url": "http://site.test/"},
    ]
    result = await cycle(targets, dns_server.port)
    assert verdicts(result) == {"canary": "reachable", "gone": "dns_blocking",
                                "site": "dns_blocking"}  # fmt: skip
    assert result.vantage.connectivity_up is True
    assert (result.vantage.canaries, result.vantage.canaries_up) == (2, 1)
    # The failing canary's NXDOMAIN is not the link's: failures matter only when no canary
    # connected, so the site's NXDOMAIN keeps its verdict.
    assert result.vantage.canary_failures == ()


async def test_a_box_that_accepts_every_connection_makes_bare_tcp_inconclusive(servers) -> None:
    web = await servers(start_web, "valid", HOST)
    dns_server = await servers(start_dns, Zone({"web.test": [HOST]}))
    accepting = await servers(start_raw, "silent", HOST)  # accepts, never speaks
    target = [{"name": "dc", "tcp": f"{HOST}:{accepting.port}"}]
    others = [
        # A page proves its server: the middlebox changes nothing.
        {"name": "web", "url": f"http://web.test:{web.port}/"},
        # An exchange the box swallowed proves nothing either way.
        {
            "name": "exchange",
            "tcp": f"{HOST}:{accepting.port}",
            "exchange": {"send": "ping\n", "expect": "pong"},
        },
    ]
    intercepted = await cycle(
        target + others, dns_server.port, vantage={"tcp_canary": f"{HOST}:{accepting.port}"}
    )
    assert intercepted.vantage.tcp_intercepted is True
    reports = {r.target.name: r for r in intercepted.reports}
    report = reports["dc"]
    assert (report.verdict, report.local_verdict) == ("inconclusive", "reachable")
    assert "middlebox" in (report.note or "")
    assert (reports["web"].verdict, reports["web"].local_verdict) == ("reachable", None)
    swallowed = reports["exchange"]
    assert (swallowed.verdict, swallowed.local_verdict) == ("inconclusive", "protocol_blocking")
    honest = await cycle(target, dns_server.port, vantage={"tcp_canary": f"{HOST}:{closed_port()}"})
    assert honest.vantage.tcp_intercepted is False
    assert verdicts(honest) == {"dc": "reachable"}
    metrics = PrometheusSink()
    metrics.publish(intercepted)
    assert metrics.registry.get_sample_value("reachprobe_vantage_tcp_intercepted") == 1


async def test_nxdomain_hijacking_is_detected(servers) -> None:
    honest = await servers(start_dns, Zone({}))
    result = await cycle([], honest.port, vantage={"nxdomain_probe_suffix": "example.test"})
    assert result.vantage.nxdomain_hijacked is False
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Scripted(lambda q, nth: answer(q)), local_addr=(HOST, 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        result = await cycle([], port, vantage={"nxdomain_probe_suffix": "example.test"})
    finally:
        transport.close()
    assert result.vantage.nxdomain_hijacked is True
    assert result.vantage.nxdomain_answer == ("127.0.0.9",)


def res_pq(nonce: bytes) -> bytes:
    """A data centre's resPQ (built by hand, independently of the probe's own encoder)."""
    body = struct.pack("<I", 0x05162463) + nonce + os.urandom(16) + b"\x08" + b"\x17" * 8
    body += b"\x00\x00\x00" + struct.pack("<Iiq", 0x1CB5C415, 1, 0x1234)
    return struct.pack("<qqi", 0, 0x6000000000000004, len(body)) + body


async def fake_dc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A Telegram DC's first answer over the intermediate transport."""
    assert await reader.readexactly(4) == b"\xee\xee\xee\xee"
    (length,) = struct.unpack("<i", await reader.readexactly(4))
    payload = await reader.readexactly(length)
    (constructor,) = struct.unpack_from("<I", payload, 20)
    assert constructor == 0xBE7E8EF1
    reply = res_pq(payload[24:40])
    writer.write(struct.pack("<i", len(reply)) + reply)
    await writer.drain()
    writer.close()


async def test_a_telegram_dc_is_proved_by_mtproto(servers) -> None:
    dns_server = await servers(start_dns, Zone({}))
    dc = await asyncio.start_server(fake_dc, HOST, 0)
    silent = await servers(start_raw, "silent", HOST)
    http = await servers(start_web, "valid", HOST)
    targets = [
        {"name": "dc", "tcp": f"{HOST}:{dc.sockets[0].getsockname()[1]}", "exchange": "mtproto"},
        {"name": "box", "tcp": f"{HOST}:{silent.port}", "exchange": "mtproto"},
        {"name": "web", "tcp": f"{HOST}:{http.port}", "exchange": "mtproto"},
    ]
    try:
        result = await cycle(targets, dns_server.port)
    finally:
        dc.close()
    assert verdicts(result) == {
        "dc": "reachable",
        "box": "protocol_blocking",
        "web": "protocol_blocking",
    }
    codes = {r.target.name: r.chains[0][1].result.value for r in result.reports}
    assert codes == {"dc": "ok", "box": "exchange_timeout", "web": "exchange_mismatch"}


def test_res_pq_must_echo_our_nonce() -> None:
    nonce = os.urandom(16)
    exchange.check_res_pq(res_pq(nonce), nonce)
    for bad in (res_pq(os.urandom(16)), res_pq(nonce)[:30], struct.pack("<i", -404)):
        with pytest.raises(UnexpectedReplyError):
            exchange.check_res_pq(bad, nonce)


async def test_send_expect_exchange(servers) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    dns_server = await servers(start_dns, Zone({}))
    targets = [
        {
            "name": "echo",
            "tcp": f"{HOST}:{port}",
            "exchange": {"send": "ping\n", "expect": "^ping"},
        },
        {"name": "other", "tcp": f"{HOST}:{port}", "exchange": {"send": "hi\n", "expect": "^ping"}},
    ]
    try:
        result = await cycle(targets, dns_server.port)
    finally:
        server.close()
    assert verdicts(result) == {"echo": "reachable", "other": "protocol_blocking"}


async def test_any_working_address_among_many_makes_the_target_reachable(servers) -> None:
    """Six answers, only one listens: found within `address_limit`, in batches, whatever
    order the answer lists them in (an rdataset has no order, and real resolvers rotate)."""
    web = await servers(start_web, "valid", "127.0.0.26")
    addresses = [f"127.0.0.{n}" for n in range(21, 27)]
    dns_server = await servers(start_dns, Zone({"many.test": addresses}))
    target = [{"name": "many", "url": f"http://many.test:{web.port}/"}]
    for _ in range(3):
        found = await cycle(target, dns_server.port, max_addresses=2, address_limit=8)
        assert verdicts(found) == {"many": "reachable"}
    capped = await cycle(target, dns_server.port, max_addresses=2, address_limit=2)
    assert len(capped.reports[0].chains) == 2  # the bound holds: two addresses, one batch


async def test_a_transient_failure_is_confirmed_on_a_fresh_connection() -> None:
    """The first connection is reset after the request; the second is served."""
    connections = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections == 1:
            # SO_LINGER 0: close() sends a RST, as a flaky middlebox would.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        body = PAGE.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(flaky, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await cycle(
            [
                {
                    "name": "flaky",
                    "tcp": f"{HOST}:{port}",
                    "exchange": {"send": "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "expect": "genuine"},
                }
            ],
            closed_port(),
        )
    finally:
        server.close()
    report = result.reports[0]
    assert report.verdict == "reachable"
    first = report.chains[0][1].to_json()["data"]["first_attempt"]
    assert first["result"] in ("exchange_reset", "exchange_eof")
    assert connections == 2


async def test_a_hijacked_plain_http_site_is_dns_inconsistent_without_a_fingerprint(
    servers,
) -> None:
    real = await servers(start_web, "valid", "127.0.0.31", body=PAGE)
    port = real.port
    await servers(start_web, "valid", "127.0.0.30", port, body=ISP_PAGE)
    test_dns = await servers(start_dns, Zone({"news.test": ["127.0.0.30"]}))
    control_dns = await servers(start_dns, Zone({"news.test": ["127.0.0.31"]}))
    target = [{"name": "news", "url": f"http://news.test:{port}/"}]
    result = await cycle(target, test_dns.port, control_dns.port)
    report = result.reports[0]
    assert report.verdict == "dns_blocking"
    assert report.dns is not None
    assert report.dns.result == "dns_inconsistent"
    assert "another page" in report.dns.detail
    assert report.dns.to_json()["data"]["control_page"] == {
        "address": f"127.0.0.31:{port}",
        "status": 200,
        "title": "The real site",
        "body_bytes": len(PAGE),
        "differs": "title 'Provider portal' vs 'The real site'",
    }
    # The same page from both addresses is consistent, whatever the resolvers said.
    await servers(start_web, "valid", "127.0.0.32", port, body=PAGE)
    honest_dns = await servers(start_dns, Zone({"news.test": ["127.0.0.32"]}))
    same = await cycle(target, honest_dns.port, control_dns.port)
    assert verdicts(same) == {"news": "reachable"}
    assert same.reports[0].dns.result == "ok"


async def test_a_plaintext_answer_to_the_client_hello_is_tls_not_tls() -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await cycle([{"name": "tls", "host": HOST, "port": port, "tls": True}], 1)
    finally:
        server.close()
    report = result.reports[0]
    assert report.verdict == "tls_blocking"
    handshake = report.chains[0][1]
    assert handshake.result == "tls_not_tls"
    assert "HTTP/1.1 403 Forbidden" in handshake.detail


async def test_a_failing_control_resolver_is_named_and_the_verdict_still_decided(
    servers,
) -> None:
    web = await servers(start_web, "valid", HOST)
    test_dns = await servers(start_dns, Zone({"site.test": [HOST]}))
    silent_control = await servers(start_dns, Zone({"site.test": "silent"}))
    target = [{"name": "site", "url": f"http://site.test:{web.port}/"}]
    result = await cycle(target, test_dns.port, silent_control.port)
    report = result.reports[0]
    assert report.verdict == "reachable"
    control = report.dns.to_json()["data"]["control"]
    assert control["result"] == "dns_timeout"
    assert control["detail"]
    metrics = PrometheusSink()
    metrics.publish(result)
    sample = metrics.registry.get_sample_value
    labels = {"resolver": "control", "result": "dns_timeout"}
    assert sample("reachprobe_resolver_results_total", labels) == 1


@pytest.mark.parametrize(
    ("test", "control", "differs"),
    [
        ((200, "Home", 1000), (200, "Home", 1000), None),
        ((200, "Home", 1000), (200, "home", 800), None),  # within OONI's 0.7 length ratio
        # OONI's boundary: a ratio of exactly 0.7 is already another page.
        ((200, "Home", 700), (200, "Home", 1000), "body 700 vs 1000 bytes"),
        ((200, "Home", 1000), (200, None, 1000), None),  # no title to compare
        ((302, "Home", 1000), (200, "Home", 1000), "status 302 vs 200"),
        ((200, "Portal", 1000), (200, "Home", 1000), "title 'Portal' vs 'Home'"),
        ((200, "Home", 300), (200, "Home", 1000), "body 300 vs 1000 bytes"),
    ],
)
def test_page_difference(
    test: tuple[int, str | None, int], control: tuple[int, str | None, int], differs: str | None
) -> None:
    def facts(status: int, title: str | None, size: int) -> HttpFacts:
        return HttpFacts(status=status, body_bytes=size, bytes_per_second=None, title=title)

    assert page_difference(facts(*test), facts(*control)) == differs


def test_an_inconsistency_names_every_address_on_both_sides() -> None:
    def answer(*addresses: str) -> StepResult:
        return StepResult(Step.DNS, Code.OK, facts=DnsFacts("udp", addresses))

    tested, truth = answer("10.9.0.1", "10.9.0.2"), answer("10.8.0.1", "10.8.0.2")
    sides = (
        "test answers 10.9.0.1, 10.9.0.2 share nothing with the control resolver's "
        "(10.8.0.1, 10.8.0.2)"
    )
    mismatch = [StepResult(Step.TLS, Code.TLS_HOSTNAME_MISMATCH)]
    assert (
        inconsistent(tested, truth, [mismatch]) == f"{sides} and fail TLS validation for the name"
    )
    page = PageComparison("10.8.0.1", 200, "Home", 1000, "status 302 vs 200")
    assert inconsistent(tested, truth, [[]], page) == (
        f"{sides} and serve another page: status 302 vs 200"
    )


async def test_canaries_behind_a_tls_intercepting_proxy_do_not_mean_a_dead_link(
    servers, tmp_path: Path
) -> None:
    """Canaries that connect but fail TLS validation show interception, not a dead link: the
    HTTPS target keeps its tls_blocking verdict (the middlebox, not the link, decided it)."""
    proxy_cert = server_context(Pki(tmp_path).issue("canary.test", "site.test", trusted=False))
    proxy = await servers(start_web, "valid", HOST, ssl_context=proxy_cert)
    dns_server = await servers(start_dns, Zone({n: [HOST] for n in ("canary.test", "site.test")}))
    targets = [
        {"name": "canary", "url": f"https://canary.test:{proxy.port}/", "group": "canary"},
        {"name": "canary-b", "url": f"https://site.test:{proxy.port}/", "group": "canary"},
        {"name": "site", "url": f"https://site.test:{proxy.port}/"},
    ]
    result = await cycle(targets, dns_server.port)
    assert result.vantage.connectivity_up is True
    assert (result.vantage.canaries_up, result.vantage.canaries_connected) == (0, 2)
    assert verdicts(result) == {
        "canary": "tls_blocking", "canary-b": "tls_blocking", "site": "tls_blocking"
    }  # fmt: skip
