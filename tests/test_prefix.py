"""Prefix sampling: the per-cycle sampler, the Wilson interval, and the sweep on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.plan import DEFAULT_SEED, Prefix
from measure.prefixes import (
    among_responsive,
    cycle_number,
    host_count,
    probe_prefixes,
    sample,
    summarize,
    sweep,
    wilson,
)
from measure.report import AddressOutcome
from simlab.net import closed_port
from simlab.tcp import RawServer

ipv4_networks = st.builds(
    lambda address, length: ipaddress.IPv4Network((address, length), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),
)
ipv6_networks = st.builds(
    lambda address, length: ipaddress.IPv6Network((address, length), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(16, 128),
)
networks = st.one_of(ipv4_networks, ipv6_networks)
seeds = st.one_of(st.text(max_size=20), st.binary(max_size=20))


# --- the sampler ------------------------------------------------------------------------------


@given(networks, st.integers(0, 300), seeds, st.integers(-(2**40), 2**40))
@settings(max_examples=200, deadline=None)
def test_sample_is_deterministic_unique_in_prefix_and_sized(network, k, seed, cycle) -> None:
    picked = sample(network, k, seed, cycle)
    assert picked == sample(str(network), k, seed, cycle)
    assert len(picked) == min(k, host_count(network))
    assert len(set(picked)) == len(picked)
    for text in picked:
        address = ipaddress.ip_address(text)
        assert address in network
        assert str(address) == text  # canonical form, as an operator would compare them


@given(networks, seeds)
@settings(max_examples=100, deadline=None)
def test_sample_never_takes_network_broadcast_or_anycast(network, seed) -> None:
    picked = set(sample(network, 64, seed, 7))
    if network.version == 4 and network.prefixlen <= 30:
        assert str(network.network_address) not in picked
        assert str(network.broadcast_address) not in picked
    if network.version == 6 and network.prefixlen <= 126:
        assert str(network.network_address) not in picked


@pytest.mark.parametrize(
    ("cidr", "hosts"),
    [
        ("10.0.0.0/24", 254),
        ("10.0.0.0/30", 2),
        ("10.0.0.0/31", 2),
        ("10.0.0.1/32", 1),
        ("2001:db8::/64", 2**64 - 1),
        ("2001:db8::/127", 2),
        ("2001:db8::1/128", 1),
    ],
)
def test_host_count(cidr: str, hosts: int) -> None:
    assert host_count(cidr) == hosts


def test_sample_larger_than_prefix_returns_every_host() -> None:
    picked = sample("192.0.2.0/29", 100, "seed", 3)
    assert sorted(picked, key=ipaddress.ip_address) == [f"192.0.2.{i}" for i in range(1, 7)]


def test_seed_cycle_and_prefix_each_change_the_sample() -> None:
    base = sample("10.0.0.0/8", 16, "seed", 100)
    assert sample("10.0.0.0/8", 16, "seed", 101) != base
    assert sample("10.0.0.0/8", 16, "other", 100) != base
    assert sample("10.0.0.0/8", 16, b"seed", 100) == base  # str and its UTF-8 bytes agree
    # Same offsets in another prefix would be a correlated sample; it must not be.
    shifted = sample("11.0.0.0/8", 16, "seed", 100)
    assert [int(ipaddress.ip_address(a)) - (11 << 24) for a in shifted] != [
        int(ipaddress.ip_address(a)) - (10 << 24) for a in base
    ]


def test_a_smaller_sample_is_a_prefix_of_a_larger_one() -> None:
    """Raising the sample size keeps the addresses already probed (comparable over time)."""
    assert sample("198.18.0.0/15", 1000, "s", 5)[:50] == sample("198.18.0.0/15", 50, "s", 5)


def test_sample_is_pinned_across_versions() -> None:
    """The sample is a cross-vantage contract: this exact list must never change silently."""
    assert sample("198.18.16.0/20", 4, "reachprobe", 42) == [
        "198.18.20.52",
        "198.18.28.209",
        "198.18.20.237",
        "198.18.16.140",
    ]


def test_sample_is_uniform() -> None:
    """Every host of a /28 is picked about equally often over many cycles (chi-square)."""
    hosts, k, cycles = 14, 4, 3500
    counts = Counter(a for c in range(cycles) for a in sample("10.9.8.0/28", k, "u", c))
    assert len(counts) == hosts
    expected = cycles * k / hosts
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    # 13 degrees of freedom: P(chi2 > 34.5) = 0.001. Deterministic inputs, so never flaky.
    assert chi2 < 34.5, counts


def test_first_pick_of_a_huge_ipv6_prefix_spreads_over_its_high_bits() -> None:
    network = ipaddress.ip_network("2001:db8::/32")
    tops = {
        int(ipaddress.ip_address(sample(network, 1, "v6", c)[0])) >> 92 & 0xF for c in range(200)
    }
    assert len(tops) == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("10.0.0.0/33", 4, "s", 1), "not a network"),
        (("10.0.0.1/24", 4, "s", 1), "host bits"),
        (("10.0.0.0/24", -1, "s", 1), "non-negative"),
        (("10.0.0.0/24", 2.5, "s", 1), "non-negative"),
        (("10.0.0.0/24", 4, "s", 1.5), "cycle"),
    ],
)
def test_sample_rejects_bad_input_clearly(args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample(*args)


def test_cycle_number_agrees_within_an_interval() -> None:
    assert cycle_number(1_700_000_000.0, 60) == 28_333_333
    assert cycle_number(1_700_000_039.9, 60) == 28_333_333
    assert cycle_number(1_700_000_040.0, 60) == 28_333_334
    with pytest.raises(ValueError, match="interval"):
        cycle_number(1.0, 0)


# --- the Wilson interval ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3.
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_known_values(successes: int, n: int, low: float, high: float) -> None:
    got = wilson(successes, n)
    assert got == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


@given(st.integers(1, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_bounds(case) -> None:
    successes, n = case
    low, high = wilson(successes, n)
    assert 0.0 <= low <= successes / n <= high <= 1.0
    assert (low == 0.0) == (successes == 0)
    assert (high == 1.0) == (successes == n)
    # Symmetric: failures' interval is the mirror image.
    mirror = wilson(n - successes, n)
    assert mirror == (pytest.approx(1 - high, abs=1e-12), pytest.approx(1 - low, abs=1e-12))


@given(st.integers(0, 1000))
def test_wilson_narrows_with_more_samples(successes) -> None:
    low1, high1 = wilson(successes, 1000)
    low4, high4 = wilson(4 * successes, 4000)
    assert high4 - low4 < high1 - low1


def test_wilson_385_samples_give_about_five_percent() -> None:
    """The issue's rule of thumb: about 385 samples give +-5% at 95%, at the worst case p=0.5."""
    low, high = wilson(192, 385)
    assert math.isclose((high - low) / 2, 0.05, abs_tol=0.001)


def test_wilson_rejects_impossible_counts() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson(3, 2)
    with pytest.raises(ValueError, match="successes"):
        wilson(-1, 2)


# --- summaries and joins ----------------------------------------------------------------------


def _outcome(address: str, result: str) -> AddressOutcome:
    return AddressOutcome(address, result, 0.001)


def test_summarize_counts_codes_and_ratio() -> None:
    outcomes = [_outcome(f"10.0.0.{i}", "ok") for i in range(6)]
    outcomes += [_outcome(f"10.0.1.{i}", "tcp_timeout") for i in range(3)]
    outcomes.append(_outcome("10.0.2.1", "tcp_refused"))
    result = summarize("p", "10.0.0.0/16", outcomes)
    assert (result.sampled, result.reachable, result.ratio) == (10, 6, 0.6)
    assert result.results == {"ok": 6, "tcp_refused": 1, "tcp_timeout": 3}
    assert (result.ci_low, result.ci_high) == wilson(6, 10)
    assert result.to_json() == {
        "name": "p",
        "cidr": "10.0.0.0/16",
        "sampled": 10,
        "reachable": 6,
        "ratio": 0.6,
        "ci_low": round(result.ci_low, 6),
        "ci_high": round(result.ci_high, 6),
        "results": {"ok": 6, "tcp_refused": 1, "tcp_timeout": 3},
        "method": "connect",
    }
    assert len(result.to_json(outcomes=True)["outcomes"]) == 10


def test_among_responsive_keeps_only_what_the_control_reached() -> None:
    addresses = [f"10.0.0.{i}" for i in range(1, 9)]

    def outcomes(reached: set[int]) -> list[AddressOutcome]:
        return [
            _outcome(a, "ok" if i in reached else "tcp_timeout") for i, a in enumerate(addresses)
        ]

    # Control: the first six answer, the last two are unused space.
    control = summarize("p", "c", outcomes({0, 1, 2, 3, 4, 5}))
    # Test: two of the six live ones are blocked, and unused space looks the same as blocking.
    test = summarize("p", "c", outcomes({0, 1, 2, 3}))
    joined = among_responsive(test, control)
    assert (test.sampled, test.reachable) == (8, 4)
    assert (joined.sampled, joined.reachable) == (6, 4)
    assert joined.results == {"ok": 4, "tcp_timeout": 2}


# --- the sweep, against real loopback sockets ----------------------------------------------


async def test_sweep_classifies_each_connect() -> None:
    server = await RawServer("silent", "127.0.0.1").start()
    try:
        closed = closed_port("127.0.0.1")
        result = await sweep(["127.0.0.1"] * 5, server.port, 2.0, 3, name="lo", cidr="x")
        assert (result.sampled, result.reachable, result.results) == (5, 5, {"ok": 5})
        await asyncio.wait_for(server.wait_connections(5), 5)
        refused = await sweep(["127.0.0.1", "::1"], closed, 2.0, 8)
        assert refused.results == {"tcp_refused": 2}
        assert [o.address for o in refused.outcomes] == ["127.0.0.1", "::1"]
    finally:
        await server.close()


async def test_sweep_times_out_unanswered_syns() -> None:
    # A listener with a full backlog that never accepts: further SYNs go unanswered, as
    # behind a blackhole.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    try:
        result = await sweep(["127.0.0.1"] * 4, port, 0.3, 4)
    finally:
        listener.close()
    assert result.results.get("tcp_timeout", 0) >= 1
    assert result.sampled == 4


async def test_sweep_keeps_sample_order_and_bounds_concurrency() -> None:
    server = await RawServer("silent", "127.0.0.1").start()
    try:
        addresses = ["127.0.0.1", "127.0.0.1", "::1"] * 10
        result = await sweep(addresses, server.port, 2.0, 4)
        assert [o.address for o in result.outcomes] == addresses
        assert result.results["ok"] == 20
        assert result.results["tcp_refused"] == 10  # nothing listens on ::1 at that port
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"addresses": ["nope"]}, "not an IP address"),
        ({"port": 0}, "port"),
        ({"timeout": 0}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
async def test_sweep_rejects_bad_input_clearly(kwargs, message: str) -> None:
    args = {"addresses": ["127.0.0.1"], "port": 9, "timeout": 1.0, "concurrency": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        await sweep(**args)


async def test_probe_prefixes_one_result_per_prefix_from_one_pool() -> None:
    server = await RawServer("silent", "127.0.0.1").start()
    try:
        closed = closed_port("127.0.0.1")
        prefixes = [
            Prefix("up", "127.0.0.1/32", server.port, 4),  # a /32: its one address, once
            Prefix("refused", "127.0.0.0/29", closed, 10),  # 6 hosts: all of them
            Prefix("v6", "::1/128", closed, 1),
        ]
        up, refused, v6 = await probe_prefixes(prefixes, "seed", 5, 2.0, 2)
    finally:
        await server.close()
    assert (up.name, up.cidr, up.results) == ("up", "127.0.0.1/32", {"ok": 1})
    assert (refused.sampled, refused.results) == (6, {"tcp_refused": 6})
    assert [o.address for o in refused.outcomes] == sample("127.0.0.0/29", 10, "seed", 5)
    assert (v6.cidr, v6.results) == ("::1/128", {"tcp_refused": 1})


async def test_probe_prefixes_rejects_a_bad_port_before_connecting() -> None:
    with pytest.raises(ValueError, match="port"):
        await probe_prefixes([Prefix("p", "127.0.0.0/30", 0, 1)], "s", 1, 1.0, 1)


def test_command_line_prints_json() -> None:
    closed = closed_port("127.0.0.1")
    argv = [
        sys.executable,
        "-m",
        "measure.prefixes",
        "--cidr",
        "127.0.0.0/24",
        "--port",
        str(closed),
    ]
    proc = subprocess.run(
        [*argv, "--sample", "5", "--cycle", "9", "--timeout", "2", "--outcomes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cycle"] == 9
    assert out["sampled"] == 5
    assert out["results"] == {"tcp_refused": 5}
    assert [o["address"] for o in out["outcomes"]] == sample("127.0.0.0/24", 5, DEFAULT_SEED, 9)


def test_command_line_rejects_a_bad_prefix() -> None:
    argv = [sys.executable, "-m", "measure.prefixes", "--cidr", "10.0.0.0/33", "--port", "443"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "not a network" in proc.stderr
    assert "Traceback" not in proc.stderr
