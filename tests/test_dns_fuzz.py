"""Fuzzing the DNS answer evaluation: whatever responses (any rcode, any mix of addresses,
any number of competing answers) or errors a query collects, `evaluate` gives one DNS code
and never raises; arbitrary datagrams on the query's port are never fatal."""

from __future__ import annotations

import asyncio
import ipaddress

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.bogons import BogonFilter
from probes.dns import QTYPES, QueryOutcome, _UdpCollector, evaluate
from probes.taxonomy import CODES, Code, Step

QUERIES = {q: dns.message.make_query("site.test", q) for q in QTYPES}
addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)
)  # fmt: skip


@st.composite
def responses(draw: st.DrawFn, qtype: int) -> dns.message.Message:
    msg = dns.message.make_response(QUERIES[qtype])
    msg.set_rcode(draw(st.sampled_from([0, 1, 2, 3, 4, 5])))
    for address in draw(st.lists(addresses, max_size=5)):
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        msg.answer.append(dns.rrset.from_text("site.test.", 60, "IN", kind, address))
    return msg


@st.composite
def outcomes(draw: st.DrawFn) -> dict[int, QueryOutcome]:
    found = {}
    for qtype in QTYPES:
        answered = draw(st.lists(responses(qtype), max_size=3))
        error = None if answered or draw(st.booleans()) else TimeoutError()
        found[qtype] = QueryOutcome(answered, error, draw(st.integers(0, 3)))
    return found


@settings(max_examples=300, deadline=None)
@given(outcomes(), st.lists(st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "::1/128"])))
def test_evaluate_is_total(found: dict[int, QueryOutcome], exempt: list[str]) -> None:
    code, detail, usable = evaluate(found, BogonFilter(exempt))
    assert code in (Code.OK, *CODES[Step.DNS])
    assert isinstance(detail, str)
    assert (code == Code.OK) == bool(usable)
    bogons = BogonFilter(exempt)
    assert not any(bogons.is_bogon(a) for a in usable)  # a bogon is never handed on


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_datagram_on_the_query_port_is_never_fatal(data: bytes) -> None:
    async def feed() -> _UdpCollector:
        collector = _UdpCollector(QUERIES[dns.rdatatype.A])
        collector.datagram_received(data, ("127.0.0.1", 53))
        return collector

    collector = asyncio.run(feed())
    assert len(collector.responses) <= 1
