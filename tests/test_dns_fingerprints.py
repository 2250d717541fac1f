"""DNS fingerprints: an answer that is a censor's known blockpage server or sinkhole is
`dns_fingerprint` (verdict `dns_blocking`) with the fingerprint named, with or without a
control resolver, and is never connected to. Pure rules first, then a real cycle against
simlab's DNS server on loopback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dns.rdatatype
import dns.rrset

from agent.config import parse_config
from agent.fingerprint_db import read_ooni_dns
from agent.planner import make_plan
from agent.sinks.prometheus import PrometheusSink
from measure.cycle import run_cycle
from measure.prober import Prober
from measure.report import CycleReport
from probes.bogons import BogonFilter
from probes.dns import QueryOutcome, evaluate
from probes.dns_fingerprints import DnsFingerprint, DnsFingerprints
from simlab import Zone, start_dns, start_raw
from tests.test_classify import AAAA, A, outcomes, response

SAMPLE = DnsFingerprints(
    read_ooni_dns(Path(__file__).parent / "fixtures" / "ooni" / "fingerprints_dns.csv")
)


def test_a_known_address_is_named() -> None:
    code, detail, addresses = evaluate(
        outcomes([response(A, 0, "198.51.100.20")]), BogonFilter(), SAMPLE
    )
    assert (code, addresses) == ("dns_fingerprint", [])
    assert detail == "answer 198.51.100.20 is sample.dns_aa_0, AA"


def test_one_known_address_among_others_names_the_answer() -> None:
    a = response(A, 0, "192.0.2.1", "198.51.100.20")
    aaaa = response(AAAA, 0, "2001:db8::20")
    code, detail, _ = evaluate(outcomes([a], [aaaa]), BogonFilter(), SAMPLE)
    assert code == "dns_fingerprint"
    assert "198.51.100.20 is sample.dns_aa_0" in detail


def test_an_ipv6_answer_matches_however_the_fingerprint_wrote_it() -> None:
    code, detail, _ = evaluate(
        outcomes([], [response(AAAA, 0, "2001:db8:0:0:0:0:0:20")]), BogonFilter(), SAMPLE
    )
    assert code == "dns_fingerprint"
    assert "sample.dns_aa_1" in detail


def test_a_cname_to_a_known_blockpage_host_is_named() -> None:
    msg = response(A, 0, "192.0.2.9")
    msg.answer.insert(
        0, dns.rrset.from_text("t.example.", 60, "IN", "CNAME", "BlockPage.Example-ISP.bb.")
    )
    code, detail, _ = evaluate(outcomes([msg]), BogonFilter(), SAMPLE)
    assert code == "dns_fingerprint"
    assert "sample.dns_bb_0" in detail


def test_a_known_sinkhole_in_private_space_is_named_not_just_a_bogon() -> None:
    answer = outcomes([response(A, 0, "10.10.34.34")])
    assert evaluate(answer, BogonFilter(), SAMPLE)[0] == "dns_fingerprint"
    assert evaluate(answer, BogonFilter())[0] == "dns_bogon"


def test_unknown_answers_and_left_out_entries_are_ordinary() -> None:
    documentation = BogonFilter(["192.0.2.0/24", "203.0.113.0/24"])  # ordinary addresses here
    for address in ("192.0.2.1", "203.0.113.50"):  # unknown; OONI's false positive
        code, _, addresses = evaluate(outcomes([response(A, 0, address)]), documentation, SAMPLE)
        assert (code, addresses) == ("ok", [address])
    # a vague bogon entry (0.0.0.0) is left out: the bogon rule speaks for it
    assert evaluate(outcomes([response(A, 0, "0.0.0.0")]), BogonFilter(), SAMPLE)[0] == "dns_bogon"


def test_injection_is_still_injection() -> None:
    forged = [response(A, 0, "198.51.100.20"), response(A, 0, "192.0.2.1")]
    code, _, _ = evaluate({A: QueryOutcome(forged), AAAA: QueryOutcome([])}, BogonFilter(), SAMPLE)
    assert code == "dns_injected"


# On loopback: the test resolver answers a fingerprinted address, where a trap listens.
SINKHOLE = "127.77.0.1"


async def probe(test_dns: int, port: int, fingerprints: tuple[DnsFingerprint, ...]) -> CycleReport:
    config = parse_config(
        {
            "agent": {"timeout": "1s", "interval": "10s", "jitter": "0s", "listen": None},
            "resolvers": {
                "test": {"type": "udp", "servers": [f"127.0.0.1:{test_dns}"]},
                "bogon_exempt": ["127.0.0.0/8"],
                "injection_window": "50ms",
            },
            "targets": [{"name": "news", "url": f"http://news.test:{port}/", "group": "NEWS"}],
        },
        "test.yaml",
    )
    plan = dataclasses.replace(make_plan(config), dns_fingerprints=fingerprints)
    prober = Prober(plan)
    try:
        return await run_cycle(prober, plan.targets)
    finally:
        await prober.aclose()


async def test_a_fingerprinted_answer_is_dns_blocking_without_a_control(servers) -> None:
    trap = await servers(start_raw, "reset", SINKHOLE, 0)
    resolver = await servers(start_dns, Zone({"news.test": [SINKHOLE]}))
    known = (DnsFingerprint("lab.sinkhole_1", SINKHOLE, "RU", "lab"),)
    result = await probe(resolver.port, trap.port, known)
    (report,) = result.reports
    assert report.dns is not None
    assert report.dns.result == "dns_fingerprint"
    assert report.dns.detail == f"answer {SINKHOLE} is lab.sinkhole_1, RU"
    assert report.verdict == "dns_blocking"
    assert trap.connections == 0
    (dns_json,) = [s for s in report.to_json()["steps"] if s["step"] == "dns"]  # type: ignore[union-attr]
    assert dns_json["result"] == "dns_fingerprint"
    assert "lab.sinkhole_1" in dns_json["detail"]
    metrics = PrometheusSink()
    metrics.publish(result)
    labels = {"target": "news", "step": "dns", "result": "dns_fingerprint"}
    assert metrics.registry.get_sample_value("reachprobe_probe_results_total", labels) == 1


async def test_without_the_fingerprint_the_same_lie_is_connected_to(servers) -> None:
    """The difference the database makes: without it the lie passes DNS, the agent connects
    to the censor's address and blames a later step."""
    trap = await servers(start_raw, "reset", SINKHOLE, 0)
    resolver = await servers(start_dns, Zone({"news.test": [SINKHOLE]}))
    (report,) = (await probe(resolver.port, trap.port, ())).reports
    assert report.dns is not None
    assert report.dns.result == "ok"
    assert report.verdict not in ("dns_blocking", "reachable")
    assert trap.connections >= 1
