"""The stateless SYN scan (probes/raw/synscan.py): cookies, packets and answers, and real scans
of loopback listeners (root only).

scapy builds the answers and checks our checksums: it is an independent implementation of
the same packets.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, in4_chksum
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6TimeExceeded, IPv6, in6_chksum

from agent.config import ConfigError, parse_config
from agent.planner import make_plan
from probes.errors import ERRNO_KINDS
from probes.prefix import Prefix, probe_prefixes, sweep
from probes.raw import has_cap_net_raw
from probes.raw.synscan import (
    ICMP4_UNREACH_ERRNO,
    ICMP6_UNREACH_ERRNO,
    Reply,
    SynBuilder,
    bucket,
    cookie,
    parse_icmpv6,
    parse_ipv4,
    parse_ipv6_tcp,
    scan,
)
from probes.taxonomy import Code, Step, step_code

needs_raw = pytest.mark.skipif(not has_cap_net_raw(), reason="needs CAP_NET_RAW (root)")

keys = st.binary(min_size=16, max_size=16)
ports = st.integers(1, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
US4, US6 = "192.0.2.7", "2001:db8::7"


def _syn(source: str, address: str, port: int, sport: int, key: bytes) -> bytes:
    return SynBuilder.create(source, sport, key).segment(ipaddress.ip_address(address).packed, port)


# --- the SYN we send --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(address=v4, port=ports, sport=ports, key=keys)
def test_ipv4_syn_carries_the_cookie_and_a_checksum_scapy_accepts(address, port, sport, key):
    segment = _syn(US4, address, port, sport, key)
    # A segment whose checksum is right sums to zero with its pseudo-header.
    assert in4_chksum(socket.IPPROTO_TCP, IP(src=US4, dst=address), segment) == 0
    tcp = TCP(segment)
    assert (tcp.sport, tcp.dport, str(tcp.flags)) == (sport, port, "S")
    assert tcp.seq == cookie(key, ipaddress.ip_address(address).packed, port, sport)


@settings(max_examples=100, deadline=None)
@given(address=v6, port=ports, sport=ports, key=keys)
def test_ipv6_syn_checksum_is_what_scapy_computes(address, port, sport, key):
    segment = _syn(US6, address, port, sport, key)
    assert in6_chksum(socket.IPPROTO_TCP, IPv6(src=US6, dst=address), segment) == 0


@given(address=v4, port=ports, sport=ports, key=keys, other=keys)
def test_cookie_depends_on_every_input(address, port, sport, key, other):
    packed = ipaddress.ip_address(address).packed
    base = cookie(key, packed, port, sport)
    assert base == cookie(key, packed, port, sport)
    if other != key:
        # 32 bits: a collision is a 1 in 4 billion chance, not a flake Hypothesis will meet.
        assert cookie(other, packed, port, sport) != base
    assert cookie(key, packed, port % 65535 + 1, sport) != base


# --- answers, as a raw socket reads them ------------------------------------------------------


def _answer4(address: str, port: int, sport: int, seq: int, flags: str) -> bytes:
    return bytes(IP(src=address, dst=US4) / TCP(sport=port, dport=sport, flags=flags, ack=seq + 1))


@given(address=v4, port=ports, sport=ports, key=keys)
def test_syn_ack_and_acknowledging_rst_are_matched_by_cookie_alone(address, port, sport, key):
    packed = ipaddress.ip_address(address).packed
    seq = cookie(key, packed, port, sport)
    assert parse_ipv4(_answer4(address, port, sport, seq, "SA"), sport, key) == Reply(
        packed, port, None
    )
    assert parse_ipv4(_answer4(address, port, sport, seq, "RA"), sport, key) == Reply(
        packed, port, errno.ECONNREFUSED
    )
    # Not ours: a wrong acknowledgment, another destination port, a RST without ACK (which
    # a connecting socket ignores too), a bare ACK.
    assert parse_ipv4(_answer4(address, port, sport, seq + 1, "SA"), sport, key) is None
    assert parse_ipv4(_answer4(address, port, sport % 65535 + 1, seq, "SA"), sport, key) is None
    assert parse_ipv4(_answer4(address, port, sport, seq, "R"), sport, key) is None
    assert parse_ipv4(_answer4(address, port, sport, seq, "A"), sport, key) is None


@given(
    address=v4,
    port=ports,
    sport=ports,
    key=keys,
    icmp=st.sampled_from(
        [(3, code) for code in range(16)] + [(11, 0), (11, 1), (0, 0), (5, 1), (12, 0)]
    ),
)
def test_icmp_errors_quoting_our_syn_mean_what_connect_gets(address, port, sport, key, icmp):
    kind, code = icmp
    syn = IP(src=US4, dst=address) / TCP(_syn(US4, address, port, sport, key))
    packet = bytes(IP(src="198.51.100.1", dst=US4) / ICMP(type=kind, code=code) / bytes(syn)[:28])
    reply = parse_ipv4(packet, sport, key)
    want = {11: errno.EHOSTUNREACH, 3: ICMP4_UNREACH_ERRNO.get(code)}.get(kind)
    packed = ipaddress.ip_address(address).packed
    assert reply == (Reply(packed, port, want) if want is not None else None)
    # The same error quoting someone else's SYN (another sequence number) is not ours.
    forged = IP(src=US4, dst=address) / TCP(sport=sport, dport=port, flags="S", seq=1)
    if TCP(bytes(syn)[20:]).seq != 1:
        other = bytes(IP(dst=US4) / ICMP(type=kind, code=code) / bytes(forged)[:28])
        assert parse_ipv4(other, sport, key) is None


@given(address=v6, port=ports, sport=ports, key=keys, code=st.integers(0, 7))
def test_ipv6_answers(address, port, sport, key, code):
    packed = ipaddress.ip_address(address).packed
    segment = _syn(US6, address, port, sport, key)
    seq = TCP(segment).seq
    synack = bytes(TCP(sport=port, dport=sport, flags="SA", ack=seq + 1))
    assert parse_ipv6_tcp(packed, synack, sport, key) == Reply(packed, port, None)
    assert parse_ipv6_tcp(packed, synack, sport % 65535 + 1, key) is None
    quoted = bytes(IPv6(src=US6, dst=address) / TCP(segment))
    unreach = bytes(ICMPv6DestUnreach(code=code) / quoted)
    want = ICMP6_UNREACH_ERRNO.get(code)
    assert parse_icmpv6(unreach, sport, key) == (Reply(packed, port, want) if want else None)
    exceeded = bytes(ICMPv6TimeExceeded() / quoted)
    assert parse_icmpv6(exceeded, sport, key) == Reply(packed, port, errno.EHOSTUNREACH)


def test_the_errnos_become_the_codes_connect_reports() -> None:
    """Through the one table: unreachable codes are the TCP step's unreachable codes."""

    def code(number: int) -> Code:
        return step_code(Step.TCP, ERRNO_KINDS[number])

    assert code(ICMP4_UNREACH_ERRNO[1]) is Code.TCP_HOST_UNREACHABLE
    assert code(ICMP4_UNREACH_ERRNO[0]) is Code.TCP_NET_UNREACHABLE
    assert code(ICMP4_UNREACH_ERRNO[3]) is Code.TCP_REFUSED
    assert code(ICMP6_UNREACH_ERRNO[4]) is Code.TCP_REFUSED


def test_the_rate_limit_allows_only_a_small_burst() -> None:
    assert bucket(1000).burst == 10
    assert bucket(5).burst == 1


# --- real scans of loopback listeners ---------------------------------------------------------


def _listener(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


def _closed_port(host: str) -> int:
    with _listener(host) as sock:
        return sock.getsockname()[1]


@needs_raw
async def test_scan_of_open_and_closed_ports_ipv4_and_ipv6() -> None:
    with _listener("127.0.0.1") as up4, _listener("::1") as up6:
        jobs = [
            ("127.0.0.1", up4.getsockname()[1]),
            ("127.0.0.1", _closed_port("127.0.0.1")),
            ("::1", up6.getsockname()[1]),
            ("::1", _closed_port("::1")),
        ]
        results = await scan(jobs, 2.0, 1000)
    assert [r.result for r in results] == [Code.OK, Code.TCP_REFUSED] * 2
    assert results[2].address == f"[::1]:{jobs[2][1]}"
    assert all(r.step is Step.TCP and 0 < r.duration_seconds < 2 for r in results)


@needs_raw
async def test_a_syn_sweep_and_a_connect_sweep_agree() -> None:
    with _listener("127.0.0.1") as up:
        addresses = [f"127.0.0.{i}" for i in range(1, 40)]
        port = up.getsockname()[1]
        by_syn = await sweep(addresses, port, 2.0, 8, method="syn")
        by_connect = await sweep(addresses, port, 2.0, 8)
    # Only 127.0.0.1 listens: the rest of 127/8 refuses.
    assert by_syn.outcomes[0].result == "ok"
    assert [o.result for o in by_syn.outcomes] == [o.result for o in by_connect.outcomes]
    assert by_syn.results == {"ok": 1, "tcp_refused": 38}
    assert (by_syn.method, by_connect.method) == ("syn", "connect")


@needs_raw
async def test_the_scan_keeps_to_its_rate() -> None:
    port = _closed_port("127.0.0.1")
    jobs = [(f"127.0.1.{i}", port) for i in range(1, 61)]
    start = time.monotonic()
    results = await scan(jobs, 2.0, 200)
    elapsed = time.monotonic() - start
    assert {r.result for r in results} == {Code.TCP_REFUSED}
    # 60 SYNs at 200 a second with a burst of 2: never faster than 58 / 200 s.
    assert elapsed >= 58 / 200


async def test_a_scan_refuses_duplicate_targets() -> None:
    with pytest.raises(ValueError, match="twice"):
        await scan([("127.0.0.1", 1), ("127.0.0.1", 1)], 1.0, 10)


@needs_raw
async def test_probe_prefixes_mixes_methods() -> None:
    with _listener("127.0.0.1") as up:
        port = up.getsockname()[1]
        results = await probe_prefixes(
            [Prefix("c", "127.0.0.0/30", port, 2), Prefix("s", "127.0.0.0/30", port, 2, "syn")],
            "seed",
            1,
            2.0,
            4,
        )
    assert [r.method for r in results] == ["connect", "syn"]
    assert [o.result for o in results[0].outcomes] == [o.result for o in results[1].outcomes]


# --- configuration ----------------------------------------------------------------------------


def _config(method: str) -> dict[str, object]:
    prefix = {"name": "lab-p", "cidr": "192.0.2.0/24", "method": method}
    return {"agent": {"prefix_syn_rate": 250}, "prefixes": [prefix]}


def test_method_is_validated_and_connect_by_default() -> None:
    with pytest.raises(ConfigError, match="method"):
        parse_config(_config("ping"), "site.yaml")
    plain = parse_config({"prefixes": [{"name": "p", "cidr": "192.0.2.0/24"}]}, "site.yaml")
    assert plain.prefixes[0].method == "connect"
    assert plain.agent.prefix_syn_rate == 1000


def test_without_cap_net_raw_syn_falls_back_to_connect_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("agent.planner.syn_scan_allowed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="reachprobe"):
        plan = make_plan(parse_config(_config("syn"), "site.yaml"))
    assert [p.method for p in plan.prefixes] == ["connect"]
    assert "lab-p: method syn needs CAP_NET_RAW" in caplog.text
    monkeypatch.setattr("agent.planner.syn_scan_allowed", lambda: True)
    plan = make_plan(parse_config(_config("syn"), "site.yaml"))
    assert [p.method for p in plan.prefixes] == ["syn"]
    assert plan.prefix_syn_rate == 250
