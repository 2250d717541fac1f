"""The stateless SYN scan (probes/raw/synscan.py): cookies, packets and answers, and real scans
of loopback listeners (root only).

The answers are built here with struct, field by field from the RFCs (only probes/raw may
import scapy), and the checksum is checked another way than the scan computes it: a one's
complement sum of 16-bit words is the whole buffer as one integer modulo 0xFFFF.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config
from agent.planner import make_plan
from measure.plan import Prefix
from measure.prefixes import probe_prefixes, sweep
from probes.errors import ERRNO_KINDS
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
FLAGS = {"S": 0x02, "R": 0x04, "A": 0x10}


def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def _syn(source: str, address: str, port: int, sport: int, key: bytes) -> bytes:
    return SynBuilder.create(source, sport, key).segment(_packed(address), port)


def _sums_to_zero(source: str, destination: str, segment: bytes) -> bool:
    src, dst = _packed(source), _packed(destination)
    if len(src) == 4:
        pseudo = src + dst + bytes([0, socket.IPPROTO_TCP]) + len(segment).to_bytes(2, "big")
    else:
        pseudo = src + dst + len(segment).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    data = pseudo + segment + b"\0" * (len(segment) % 2)
    return int.from_bytes(data, "big") % 0xFFFF == 0


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: str) -> bytes:
    bits = sum(FLAGS[f] for f in flags)
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack & 0xFFFFFFFF, 5 << 4, bits, 0, 0, 0)


def _ipv4(source: str, destination: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0)
    return header + _packed(source) + _packed(destination) + payload


def _ipv6(source: str, destination: str, payload: bytes) -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(payload), socket.IPPROTO_TCP, 64)
    return header + _packed(source) + _packed(destination) + payload


def _icmp(kind: int, code: int, quoted: bytes) -> bytes:
    return struct.pack("!BBHI", kind, code, 0, 0) + quoted


# --- the SYN we send --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(address=v4, port=ports, sport=ports, key=keys)
def test_ipv4_syn_carries_the_cookie_and_a_right_checksum(address, port, sport, key):
    segment = _syn(US4, address, port, sport, key)
    assert _sums_to_zero(US4, address, segment)
    source_port, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", segment)
    assert (source_port, dport, ack, flags) == (sport, port, 0, FLAGS["S"])
    assert seq == cookie(key, _packed(address), port, sport)
    # 24 bytes: the MSS option follows the 20-byte header, as the raw probes' SYNs carry it.
    assert (offset >> 4) * 4 == len(segment) == 24
    assert segment[20:24] == struct.pack("!BBH", 2, 4, 1460)


@settings(max_examples=100, deadline=None)
@given(address=v6, port=ports, sport=ports, key=keys)
def test_ipv6_syn_checksum_covers_the_ipv6_pseudo_header(address, port, sport, key):
    assert _sums_to_zero(US6, address, _syn(US6, address, port, sport, key))


@given(address=v4, port=ports, sport=ports, key=keys, other=keys)
def test_cookie_depends_on_every_input(address, port, sport, key, other):
    packed = _packed(address)
    base = cookie(key, packed, port, sport)
    assert base == cookie(key, packed, port, sport)
    if other != key:
        # 32 bits: a collision is a 1 in 4 billion chance, not a flake Hypothesis will meet.
        assert cookie(other, packed, port, sport) != base
    assert cookie(key, packed, port % 65535 + 1, sport) != base


# --- answers, as a raw socket reads them ------------------------------------------------------


def _answer4(address: str, port: int, sport: int, seq: int, flags: str) -> bytes:
    return _ipv4(address, US4, socket.IPPROTO_TCP, _tcp(port, sport, 77, seq + 1, flags))


@given(address=v4, port=ports, sport=ports, key=keys)
def test_syn_ack_and_acknowledging_rst_are_matched_by_cookie_alone(address, port, sport, key):
    packed = _packed(address)
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
    # Routers quote the IP header and the first 8 bytes of the segment (RFC 792).
    syn = _ipv4(US4, address, socket.IPPROTO_TCP, _syn(US4, address, port, sport, key))[:28]
    packet = _ipv4("198.51.100.1", US4, socket.IPPROTO_ICMP, _icmp(kind, code, syn))
    want = {11: errno.EHOSTUNREACH, 3: ICMP4_UNREACH_ERRNO.get(code)}.get(kind)
    assert parse_ipv4(packet, sport, key) == (
        Reply(_packed(address), port, want) if want is not None else None
    )
    # The same error quoting someone else's SYN (another sequence number) is not ours.
    seq = cookie(key, _packed(address), port, sport)
    other = syn[:24] + ((seq + 1) & 0xFFFFFFFF).to_bytes(4, "big")
    forged = _ipv4("198.51.100.1", US4, socket.IPPROTO_ICMP, _icmp(kind, code, other))
    assert parse_ipv4(forged, sport, key) is None


@given(address=v6, port=ports, sport=ports, key=keys, code=st.integers(0, 7))
def test_ipv6_answers(address, port, sport, key, code):
    packed = _packed(address)
    segment = _syn(US6, address, port, sport, key)
    seq = cookie(key, packed, port, sport)
    synack = _tcp(port, sport, 77, seq + 1, "SA")
    assert parse_ipv6_tcp(packed, synack, sport, key) == Reply(packed, port, None)
    assert parse_ipv6_tcp(packed, synack, sport % 65535 + 1, key) is None
    quoted = _ipv6(US6, address, segment)
    want = ICMP6_UNREACH_ERRNO.get(code)
    unreach = parse_icmpv6(_icmp(1, code, quoted), sport, key)
    assert unreach == (Reply(packed, port, want) if want is not None else None)
    exceeded = parse_icmpv6(_icmp(3, 0, quoted), sport, key)
    assert exceeded == Reply(packed, port, errno.EHOSTUNREACH)
    assert parse_icmpv6(_icmp(128, 0, quoted), sport, key) is None  # an echo request


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


@needs_raw
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
@pytest.mark.parametrize("cidr", ["10.9.0.0/30", "2001:db8::/126"])
def test_without_a_route_both_methods_say_net_unreachable(cidr: str) -> None:
    """In a private network namespace with nothing but loopback, so nothing can leave."""
    results = {}
    for method in ("syn", "connect"):
        argv = [sys.executable, "-m", "measure.prefixes", "--cidr", cidr, "--port", "443"]
        argv += ["--sample", "2", "--cycle", "1", "--timeout", "1", "--method", method]
        done = subprocess.run(
            ["unshare", "--net", "--", *argv], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        results[method] = json.loads(done.stdout)["results"]
    assert results["syn"] == results["connect"] == {"tcp_net_unreachable": 2}


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
