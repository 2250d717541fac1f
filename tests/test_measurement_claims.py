"""What the README and docs/taxonomy.md promise about the measurement, held against real
loopback servers through the agent's measurement layer: the SNI re-check runs after every
handshake failure a name filter causes and its finding reaches the report, and a bogon in an
answer is never connected to, wherever it sits in the answer.

Each test here was checked against the mutation it guards (docs/testing.md): with the product
changed that way, the test fails.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from agent.config import parse_config
from agent.planner import make_plan
from agent.sinks.prometheus import PrometheusSink
from measure.prober import Prober, interleave
from measure.report import TargetReport
from measure.verdict import family_outcomes
from probes.browser import CONTROL_NAME as CONTROL_SNI
from probes.results import StepResult, skipped
from probes.taxonomy import Code, Step
from simlab import (
    Pki,
    RawServer,
    Zone,
    closed_port,
    server_context,
    start_dns,
    start_doh,
    start_raw,
    start_web,
)
from simlab.sni import SniFilter
from simlab.tcp import reset
from tests.test_dns_loss import Scripted, answer
from tests.test_hostile_networks import cycle, verdicts

HOST = "127.0.0.1"
# Loopback, but outside the /16 the bogon tests exempt: a bogon that is safe to connect to by
# mistake, where a trap counts such mistakes.
BOGON = "127.99.0.1"
LAB_EXEMPT = ("127.0.0.0/16",)


def tls_step(report: TargetReport) -> StepResult:
    """The TLS step of the target's only chain."""
    (chain,) = report.chains
    return next(s for s in chain if s.step == Step.TLS)


async def probe_https(servers, pki: Pki, name: str, port: int) -> TargetReport:
    """One cycle probing https://name:port/ with `name` resolving to 127.0.0.1."""
    dns_server = await servers(start_dns, Zone({name: [HOST]}))
    target = [{"name": "site", "url": f"https://{name}:{port}/"}]
    result = await cycle(target, dns_server.port, ca_file=str(pki.ca_file))
    return result.reports[0]


async def test_a_reset_of_the_name_only_is_reported_as_sni_based(servers, pki: Pki) -> None:
    """A censor that resets the ClientHello naming the site, and relays any other: the
    re-check with an innocuous name gets through, so the report says the name did it."""
    backend = await servers(
        start_web, "valid", HOST, ssl_context=server_context(pki.issue("a.test"))
    )
    middlebox = await servers(SniFilter(["blocked.test"], (HOST, backend.port)).start)

    blocked = await probe_https(servers, pki, "blocked.test", middlebox.port)
    assert blocked.verdict == "tls_blocking"
    tls = tls_step(blocked)
    assert tls.result == "tls_reset"
    control = tls.to_json()["data"]["control_sni"]
    assert control["sni"] == CONTROL_SNI
    assert control["triggered"] is True
    # The innocuous name reached the real server (whose certificate does not cover it).
    assert control["result"] == "tls_hostname_mismatch"
    assert "SNI-based" in tls.full_detail

    # The same middlebox lets the other name through: nothing to re-check.
    allowed = await probe_https(servers, pki, "a.test", middlebox.port)
    assert allowed.verdict == "reachable"
    assert "control_sni" not in tls_step(allowed).to_json().get("data", {})


@pytest.mark.parametrize(
    ("mode", "code"), [("reset", "tls_reset"), ("eof", "tls_eof"), ("silent", "tls_timeout")]
)
async def test_every_failure_a_name_filter_causes_is_rechecked(
    servers,
    pki: Pki,
    mode: str,
    code: str,
) -> None:
    """A server that fails every handshake the same way, whatever the name: the re-check
    runs after a reset, an EOF and a timeout alike, and finds that the name made no
    difference."""
    raw = await servers(start_raw, mode, HOST)
    tls = tls_step(await probe_https(servers, pki, "site.test", raw.port))
    assert tls.result == code
    # The JSON leaves out a false `triggered` (as it leaves out every unset fact).
    assert tls.to_json()["data"]["control_sni"] == {"sni": CONTROL_SNI, "result": code}
    assert "SNI-based" not in tls.full_detail


async def test_an_alert_is_an_answer_and_not_rechecked(servers, pki: Pki) -> None:
    raw = await servers(start_raw, "alert", HOST)
    tls = tls_step(await probe_https(servers, pki, "site.test", raw.port))
    assert tls.result == "tls_alert"
    assert "control_sni" not in tls.to_json().get("data", {})


async def on_one_port(*starts: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Start servers on different addresses and one port (the port a target names), each
    given the port (0: any); a fresh port if another process holds it on one address."""
    for _ in range(5):
        first = await starts[0](0)
        try:
            return [first, *[await start(first.port) for start in starts[1:]]]
        except OSError as exc:  # the `servers` fixture still closes what did start
            if exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError("no port free on every address")


def in_order(addresses: list[str]) -> Scripted:
    """A resolver answering A queries with `addresses` in this order on the wire (one record
    set each: dnspython shuffles the records of one set, as real resolvers rotate them)."""

    def reply(query: dns.message.Message, nth: int) -> dns.message.Message:
        response = dns.message.make_response(query)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            for address in addresses:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address))
        return response

    return Scripted(reply)


async def bogon_world(servers, udp, answer: list[str]) -> tuple[int, RawServer, int]:
    """A resolver answering `answer` for every name, a working web server on 127.0.0.1 and a
    trap on the bogon address, both on the one port the target names (the port the agent
    would connect to). Returns (DNS port, trap, web port)."""
    web, trap = await on_one_port(
        lambda port: servers(start_web, "valid", HOST, port),
        lambda port: servers(start_raw, "silent", BOGON, port),
    )
    return await udp(in_order(answer)), trap, web.port


@pytest.mark.parametrize(
    "answer", [[HOST, BOGON], [BOGON, HOST]], ids=["bogon-last", "bogon-first"]
)
async def test_a_bogon_anywhere_in_the_answer_is_dns_bogon_and_never_connected_to(
    servers,
    udp,
    answer: list[str],
) -> None:
    dns_port, trap, port = await bogon_world(servers, udp, answer)
    target: list[dict[str, Any]] = [{"name": "mixed", "url": f"http://mixed.test:{port}/"}]
    result = await cycle(target, dns_port, bogon_exempt=LAB_EXEMPT)
    report = result.reports[0]
    assert report.dns is not None
    assert report.dns.result == "dns_bogon"
    assert BOGON in report.dns.detail
    assert report.verdict == "dns_blocking"
    assert all(s.result == "skipped" for chain in report.chains for s in chain)
    assert trap.connections == 0


async def test_the_bogon_trap_sees_the_connection_an_exemption_allows(servers, udp) -> None:
    """The trap above can fail: with the bogon's range exempt, the agent does connect there."""
    dns_port, trap, port = await bogon_world(servers, udp, [BOGON])
    target: list[dict[str, Any]] = [{"name": "mixed", "url": f"http://mixed.test:{port}/"}]
    await cycle(target, dns_port, bogon_exempt=("127.0.0.0/8",))
    assert trap.connections >= 1


async def test_a_recheck_that_cannot_connect_says_so(servers, pki: Pki) -> None:
    """The handshake is reset (twice: the failure is confirmed), then the address stops
    listening: the re-check reports the connection's failure and concludes nothing."""
    connections = 0

    async def reset_then_vanish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(1024)
        if connections == 2:
            server.close()
        reset(writer)

    server = await asyncio.start_server(reset_then_vanish, HOST, 0)
    try:
        tls = tls_step(
            await probe_https(servers, pki, "site.test", server.sockets[0].getsockname()[1])
        )
    finally:
        server.close()
    assert tls.result == "tls_reset"
    assert tls.to_json()["data"]["control_sni"] == {"sni": CONTROL_SNI, "result": "tcp_refused"}
    assert "SNI-based" not in tls.full_detail
    assert connections == 2


async def test_tls_decides_whether_disjoint_answers_are_dns_inconsistent(
    servers,
    pki: Pki,
) -> None:
    """OONI's web_connectivity rule, on real certificates: answers that share nothing with
    the control resolver's are `dns_inconsistent` only when their TLS fails for the name (a
    wrong name or an untrusted chain); a valid certificate vouches for them, and a reset or
    an answer shared with the control proves nothing about DNS."""
    truth = "127.0.0.42"
    served = {
        # name: (the test resolver's address, the server there)
        "hijacked.test": ("127.0.0.41", server_context(pki.issue("other.test"))),
        "untrusted.test": ("127.0.0.43", server_context(pki.issue("x", trusted=False))),
        "vouched.test": ("127.0.0.44", server_context(pki.issue("vouched.test"))),
        "shared.test": ("127.0.0.45", server_context(pki.issue("other.test"))),
    }
    ports = {}
    for name, (address, context) in served.items():
        if name != "vouched.test":
            ports[name] = (await servers(start_web, "valid", address, ssl_context=context)).port
    ports["reset.test"] = (await servers(start_raw, "reset", "127.0.0.46")).port
    # The control's address serves the vouched site too: there would be a page to compare.
    vouched = served["vouched.test"]
    web, _ = await on_one_port(
        lambda port: servers(start_web, "valid", vouched[0], port, ssl_context=vouched[1]),
        lambda port: servers(start_web, "valid", truth, port, ssl_context=vouched[1]),
    )
    ports["vouched.test"] = web.port
    answers = {name: [address] for name, (address, _) in served.items()}
    answers["reset.test"] = ["127.0.0.46"]
    test_dns = await servers(start_dns, Zone(answers))
    # The control resolver is DoH, trusted through the configured CA (as the agent runs it).
    control_zone = Zone({**{n: [truth] for n in answers}, "shared.test": ["127.0.0.45"]})
    doh = await servers(start_doh, control_zone, server_context(pki.issue(HOST)))
    control = {"type": "doh", "url": doh.url}
    targets = [{"name": n.split(".")[0], "url": f"https://{n}:{p}/"} for n, p in ports.items()]
    result = await cycle(targets, test_dns.port, control, ca_file=str(pki.ca_file))
    reports = {r.target.name: r for r in result.reports}
    dns = {name: r.dns for name, r in reports.items()}
    assert {n: (d.result if d else None) for n, d in dns.items()} == {
        "hijacked": "dns_inconsistent",
        "untrusted": "dns_inconsistent",
        "vouched": "ok",
        "shared": "ok",
        "reset": "ok",
    }
    assert verdicts(result) == {
        "hijacked": "dns_blocking",
        "untrusted": "dns_blocking",
        "vouched": "reachable",
        "shared": "tls_blocking",
        "reset": "tls_blocking",
    }
    assert dns["hijacked"].detail == (
        "test answers 127.0.0.41 share nothing with the control resolver's (127.0.0.42) "
        "and fail TLS validation for the name"
    )
    # TLS vouches or accuses: no page is fetched from the control's address for comparison.
    assert all("control_page" not in d.to_json().get("data", {}) for d in dns.values())
    # The control's answer rides along as evidence, with no cause when it worked.
    assert dns["vouched"].to_json()["data"]["control"] == {
        "result": "ok",
        "addresses": [truth],
        "detail": "",
    }


def test_interleave_keeps_both_families_under_a_cap() -> None:
    v4 = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    v6 = ["2001:db8::1", "2001:db8::2"]
    assert interleave([*v4, *v6], 4) == ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"]
    assert interleave([*v6, *v4], 10) == [v4[0], v6[0], v4[1], v6[1], v4[2]]
    assert interleave(v6, 10) == v6


async def test_a_batch_holds_both_families_and_the_report_names_the_failed_one(servers) -> None:
    """The answer lists its IPv4 addresses first and only the IPv6 one listens: a batch of
    two still tries IPv6 (alternation), the target is reachable, and `families` says that
    IPv4 was refused. The reverse, IPv6 dead and IPv4 live, reads the other way round."""
    v6_live = await servers(start_web, "valid", "::1")
    v4_live = await servers(start_web, "valid", "127.0.0.73")
    dns_server = await servers(
        start_dns,
        Zone(
            {
                "v6-works.test": ["127.0.0.71", "127.0.0.72", "::1"],
                "v4-works.test": ["::1", "127.0.0.73"],
            }
        ),
    )
    targets = [
        {"name": "v6-works", "url": f"http://v6-works.test:{v6_live.port}/"},
        {"name": "v4-works", "url": f"http://v4-works.test:{v4_live.port}/"},
    ]
    exempt = ("127.0.0.0/8", "::1/128")
    result = await cycle(
        targets, dns_server.port, bogon_exempt=exempt, max_addresses=2, address_limit=2
    )
    v6_works, v4_works = result.reports
    assert verdicts(result) == {"v6-works": "reachable", "v4-works": "reachable"}
    # One IPv4 address (the answer's order is the resolver's), then the IPv6 one.
    first, second = (chain[0].address for chain in v6_works.chains)
    assert first in {f"127.0.0.{n}:{v6_live.port}" for n in (71, 72)}
    assert second == f"[::1]:{v6_live.port}"
    assert v6_works.to_json()["families"] == {"ipv4": "tcp_refused", "ipv6": "reachable"}
    assert v4_works.to_json()["families"] == {"ipv4": "reachable", "ipv6": "tcp_refused"}
    # The `check` table's "why" column names the failed family of a reachable target.
    assert (v6_works.why(), v4_works.why()) == (
        "ipv4 failed: tcp_refused",
        "ipv6 failed: tcp_refused",
    )
    metrics = PrometheusSink()
    metrics.publish(result)
    family_up = {
        (target, family): metrics.registry.get_sample_value(
            "reachprobe_target_family_up", {"target": target, "family": family}
        )
        for target in ("v6-works", "v4-works")
        for family in ("ipv4", "ipv6")
    }
    assert family_up == {
        ("v6-works", "ipv4"): 0,
        ("v6-works", "ipv6"): 1,
        ("v4-works", "ipv4"): 1,
        ("v4-works", "ipv6"): 0,
    }


def test_family_outcomes_name_what_each_family_did() -> None:
    def chain(endpoint: str, *codes: str) -> tuple[StepResult, ...]:
        steps = (Step.TCP, Step.TLS, Step.HTTP)
        return tuple(StepResult(s, Code(c), endpoint) for s, c in zip(steps, codes, strict=False))

    v4_ok = chain("192.0.2.1:443", "ok", "ok", "ok")
    v4_reset = chain("192.0.2.2:443", "ok", "tls_reset", "skipped")
    v6_timeout = chain("[2001:db8::1]:443", "tcp_timeout", "skipped", "skipped")
    v6_refused = chain("[2001:db8::2]:443", "tcp_refused", "skipped", "skipped")
    assert family_outcomes([v6_timeout, v4_reset, v4_ok]) == {
        "ipv4": "reachable",
        "ipv6": "tcp_timeout",
    }
    # The chain that got furthest speaks for a failed family, as for the target.
    assert family_outcomes([v4_reset, chain("192.0.2.3:443", "tcp_refused")]) == {
        "ipv4": "tls_reset"
    }
    assert family_outcomes([v6_refused, v6_timeout]) == {"ipv6": "tcp_refused"}
    # No address tried (DNS failed): no family.
    assert family_outcomes([(skipped(Step.TCP, None, "dns failed"),)]) == {}


async def test_every_batch_of_addresses_is_reported(servers, udp) -> None:
    """Two dead addresses, then a live one, two at a time: the target is reachable, and the
    report keeps the failed batch's chains beside the working one."""
    web = await servers(start_web, "valid", "127.0.0.63")
    dead = ["127.0.0.61", "127.0.0.62"]
    dns_port = await udp(in_order([*dead, "127.0.0.63"]))
    target = [{"name": "many", "url": f"http://many.test:{web.port}/"}]
    result = await cycle(target, dns_port, max_addresses=2, address_limit=8)
    report = result.reports[0]
    assert report.verdict == "reachable"
    tcp = [chain[0] for chain in report.chains]
    assert [s.address for s in tcp] == [f"{a}:{web.port}" for a in [*dead, "127.0.0.63"]]
    assert [s.result for s in tcp] == ["tcp_refused", "tcp_refused", "ok"]


async def test_a_lost_dns_answer_is_asked_again(udp) -> None:
    """The first query of each type goes unanswered (the first lookup times out); the lookup
    is made once more, and its answer stands, the first attempt kept as evidence."""

    first_ids: dict[int, int] = {}
    answering = in_order(["127.0.0.7"])

    def drop_first(query: dns.message.Message, nth: int) -> dns.message.Message | None:
        # Every datagram of the first query of each type (resends carry its id) is lost.
        first = first_ids.setdefault(query.question[0].rdtype, query.id)
        return None if query.id == first else answering.reply(query, nth)

    port = await udp(Scripted(drop_first))
    result = await cycle([{"name": "site", "url": f"http://site.test:{closed_port()}/"}], port)
    dns_result = result.reports[0].dns
    assert dns_result is not None
    assert dns_result.result == "ok"
    assert dns_result.facts.addresses == ("127.0.0.7",)
    data = dns_result.to_json()["data"]
    first = data["first_attempt"]
    assert (first["step"], first["result"]) == ("dns", "dns_timeout")
    assert first["detail"]
    assert "control" not in data  # no control resolver configured, none asked


async def test_a_redirect_to_another_host_goes_through_the_test_resolver(servers) -> None:
    """A redirect to another host is followed to the address the test resolver gives for it;
    one to a host that resolves to a bogon is reported, never followed there."""
    final, trap = await on_one_port(
        lambda port: servers(start_web, "valid", "127.0.0.72", port),
        lambda port: servers(start_raw, "silent", BOGON, port),
    )
    moved = f"http://moved.test:{final.port}/"
    hop = await servers(start_web, "redirect", "127.0.0.71", location=moved)
    to_bogon = await servers(
        start_web, "redirect", "127.0.0.73", location=f"http://trap.test:{final.port}/"
    )
    zone = {
        "start.test": ["127.0.0.71"],
        "moved.test": ["127.0.0.72"],
        "other.test": ["127.0.0.73"],
        "trap.test": [BOGON],
    }
    dns_server = await servers(start_dns, Zone(zone))
    targets = [
        {"name": "followed", "url": f"http://start.test:{hop.port}/"},
        {"name": "bogon", "url": f"http://other.test:{to_bogon.port}/"},
    ]
    result = await cycle(targets, dns_server.port, bogon_exempt=LAB_EXEMPT)
    http = {r.target.name: r.chains[0][-1] for r in result.reports}
    assert http["followed"].result == "ok"
    assert http["followed"].facts.redirects == (moved,)
    assert http["bogon"].facts.redirect == f"http://trap.test:{final.port}/"
    assert trap.connections == 0


async def test_a_redirect_to_https_is_followed_with_the_configured_trust(
    servers,
    pki: Pki,
) -> None:
    """The web's usual upgrade, http:// to https:// on the same host: the new hop's handshake
    validates the certificate against the configured CA, as the TLS step does."""
    secure = await servers(
        start_web, "valid", HOST, ssl_context=server_context(pki.issue("site.test"))
    )
    upgraded = f"https://site.test:{secure.port}/"
    plain = await servers(start_web, "redirect", HOST, location=upgraded)
    dns_server = await servers(start_dns, Zone({"site.test": [HOST]}))
    target = [{"name": "site", "url": f"http://site.test:{plain.port}/"}]
    result = await cycle(target, dns_server.port, ca_file=str(pki.ca_file))
    http = result.reports[0].chains[0][-1]
    assert (http.result, http.facts.redirects) == ("ok", (upgraded,))


async def test_the_configured_body_cap_bounds_what_is_read(servers) -> None:
    page = await servers(start_web, "valid", HOST, body="x" * 4096)
    dns_server = await servers(start_dns, Zone({"site.test": [HOST]}))
    target = [{"name": "site", "url": f"http://site.test:{page.port}/"}]
    result = await cycle(target, dns_server.port, max_body_bytes=1024)
    facts = result.reports[0].chains[0][-1].facts
    assert (facts.body_bytes, facts.truncated) == (1024, True)


async def test_the_targets_expectations_judge_the_page(servers) -> None:
    """expect_status, expect_body and the blockpage fingerprints, through the prober."""
    page = await servers(start_web, "valid", HOST)
    failing = await servers(start_web, "status", HOST)
    # A page a shipped fingerprint (ru-federal-block) knows.
    blockpage = await servers(
        start_web, "valid", HOST, body="<html><title>Federal block</title></html>"
    )
    dns_server = await servers(start_dns, Zone({"site.test": [HOST]}))
    targets = [
        {"name": "body", "url": f"http://site.test:{page.port}/", "expect_body": "no such text"},
        {"name": "status", "url": f"http://site.test:{failing.port}/", "expect_status": [200]},
        {"name": "any-status", "url": f"http://site.test:{failing.port}/", "expect_status": [503]},
        {"name": "blockpage", "url": f"http://site.test:{blockpage.port}/"},
    ]
    result = await cycle(targets, dns_server.port)
    codes = {r.target.name: r.chains[0][-1].result for r in result.reports}
    assert codes == {
        "body": "http_body_mismatch",
        "status": "http_status_mismatch",
        "any-status": "ok",
        "blockpage": "http_blockpage",
    }


async def test_disjoint_answers_whose_page_failed_are_not_judged(servers) -> None:
    """Plain HTTP, answers disjoint from the control's, and the test address resets the
    request: there is no page to compare, so DNS is not accused; HTTP decides."""
    port = (await servers(start_raw, "reset", "127.0.0.81")).port
    await servers(start_web, "valid", "127.0.0.82", port)
    test_dns = await servers(start_dns, Zone({"news.test": ["127.0.0.81"]}))
    control_dns = await servers(start_dns, Zone({"news.test": ["127.0.0.82"]}))
    target = [{"name": "news", "url": f"http://news.test:{port}/"}]
    result = await cycle(target, test_dns.port, control_dns.port)
    report = result.reports[0]
    assert report.dns is not None
    assert report.dns.result == "ok"
    assert report.verdict == "http_blocking"


def chain_json(report: TargetReport) -> list[list[tuple[str, str, str | None, str]]]:
    """Each chain as (step, result, address, detail) rows."""
    return [
        [(s.step.value, s.result.value, s.address, s.full_detail) for s in chain]
        for chain in report.chains
    ]


async def test_steps_after_a_failure_are_skipped_and_say_why(servers) -> None:
    dns_server = await servers(start_dns, Zone({"site.test": [HOST]}))
    port = closed_port()
    targets = [
        {"name": "refused", "url": f"https://site.test:{port}/"},
        {"name": "missing", "url": "https://nx.test/"},
    ]
    result = await cycle(targets, dns_server.port)
    reports = {r.target.name: r for r in result.reports}
    endpoint = f"{HOST}:{port}"
    ((tcp, *rest),) = chain_json(reports["refused"])
    assert tcp[:3] == ("tcp", "tcp_refused", endpoint)
    assert rest == [
        ("tls", "skipped", endpoint, "tcp failed"),
        ("http", "skipped", endpoint, "tcp failed"),
    ]
    assert chain_json(reports["missing"]) == [
        [(step, "skipped", None, "dns failed") for step in ("tcp", "tls", "http")]
    ]


async def test_the_address_that_got_furthest_speaks_for_the_target(
    servers,
    udp,
    pki: Pki,
) -> None:
    """One address resets the handshake, the other serves an error page over TLS: the
    target is `http_blocking`, told by the chain that got furthest, whichever came first."""
    context = server_context(pki.issue("site.test"))
    failing, _ = await on_one_port(
        lambda port: servers(start_web, "status", "127.0.0.92", port, ssl_context=context),
        lambda port: servers(start_raw, "reset", "127.0.0.91", port),
    )
    dns_port = await udp(in_order(["127.0.0.91", "127.0.0.92"]))
    target = [{"name": "site", "url": f"https://site.test:{failing.port}/", "expect_status": [200]}]
    result = await cycle(target, dns_port, ca_file=str(pki.ca_file))
    report = result.reports[0]
    assert [chain[-1].result for chain in report.chains] == ["skipped", "http_status_mismatch"]
    assert report.verdict == "http_blocking"


async def test_a_page_is_compared_only_when_the_answers_are_disjoint(servers) -> None:
    """Plain HTTP: answers shared with the control need no page from a control address; a
    control address that serves nothing leaves disjoint answers unjudged, not a crash."""
    shared_web = await servers(start_web, "valid", HOST)
    alone_web = await servers(start_web, "valid", "127.0.0.101")
    test_dns = await servers(
        start_dns, Zone({"shared.test": [HOST], "alone.test": ["127.0.0.101"]})
    )
    # The control's address for alone.test has nothing listening on the target's port.
    control_dns = await servers(
        start_dns, Zone({"shared.test": [HOST], "alone.test": ["127.0.0.102"]})
    )
    targets = [
        {"name": "shared", "url": f"http://shared.test:{shared_web.port}/"},
        {"name": "alone", "url": f"http://alone.test:{alone_web.port}/"},
    ]
    result = await cycle(targets, test_dns.port, control_dns.port)
    assert verdicts(result) == {"shared": "reachable", "alone": "reachable"}
    for report in result.reports:
        assert report.dns is not None
        assert report.dns.result == "ok"
        assert "control_page" not in report.dns.to_json()["data"]


async def test_the_probers_dns_queries_share_its_concurrency_bound(udp) -> None:
    """`agent.concurrency` bounds DNS queries too: with its only slot taken, no query goes
    out; once it is free, the lookup runs."""
    server = Scripted(lambda query, nth: answer(query))
    resolvers = {"test": {"type": "udp", "servers": [f"{HOST}:{await udp(server)}"]},
                 "bogon_exempt": ["127.0.0.0/8"], "injection_window": "50ms"}  # fmt: skip
    config = parse_config(
        {
            "agent": {"timeout": "1s", "concurrency": 1, "listen": None},
            "resolvers": resolvers,
            "targets": [{"name": "site", "host": "site.test", "port": closed_port()}],
        },
        "test.yaml",
    )
    plan = make_plan(config)
    prober = Prober(plan)
    try:
        async with prober.semaphore:
            probing = asyncio.create_task(prober.probe(plan.targets[0]))
            await asyncio.sleep(0.3)
            assert sum(server.seen.values()) == 0
        report = await probing
    finally:
        await prober.aclose()
    assert report.dns is not None
    assert report.dns.result == "ok"


async def test_the_configured_control_sni_is_the_recheck_name(servers, pki: Pki) -> None:
    """`raw.control_sni` is the SNI re-check's name too, raw probes on or off: here it names
    a server whose certificate covers it, so the re-check is a clean handshake."""
    backend = await servers(
        start_web, "valid", HOST, ssl_context=server_context(pki.issue("control.test"))
    )
    middlebox = await servers(SniFilter(["blocked.test"], (HOST, backend.port)).start)
    dns_server = await servers(start_dns, Zone({"blocked.test": [HOST]}))
    config = parse_config(
        {
            "agent": {"timeout": "1s", "listen": None},
            "resolvers": {
                "test": {"type": "udp", "servers": [f"{HOST}:{dns_server.port}"]},
                "bogon_exempt": ["127.0.0.0/8"],
            },
            "tls": {"ca_file": str(pki.ca_file)},
            "raw": {"control_sni": "control.test"},
            "targets": [{"name": "site", "url": f"https://blocked.test:{middlebox.port}/"}],
        },
        "control-sni.yaml",
    )
    prober = Prober(make_plan(config))
    try:
        report = await prober.probe(prober.plan.targets[0])
    finally:
        await prober.aclose()
    tls = tls_step(report)
    assert tls.result == "tls_reset"
    control = tls.to_json()["data"]["control_sni"]
    assert (control["sni"], control["result"], control["triggered"]) == ("control.test", "ok", True)
