"""Prefix sampling in the lab: estimate the blocked share of a /16 from both vantages.

The cloud namespace holds all of 10.77.0.0/16 and one responder answers every address of it;
the `prefix-sample` scenario blackholes a /20 and five /24s of it on the censor. Both clients
sweep the same per-cycle sample (`python -m measure.prefixes`, the same seed and cycle) inside
their namespaces: the control vantage must see the whole prefix up, and the censored vantage's
estimate must hold the true reachable share inside its own 95% Wilson interval. The samples are
fixed by seed and cycle, so the test is deterministic, not right 95% of the time.

The same runs with the `syn` method (a stateless SYN scan on raw sockets, the vantage is root
in its namespace), and a mixed scenario checks that the two methods give the same code to
every address: timeouts, refusals and ICMP unreachables.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

import pytest

from measure.prefixes import (
    among_responsive,
    host_count,
    sample,
    summarize,
)
from measure.report import AddressOutcome, PrefixResult
from tests.lab import netns, world
from tests.lab.censor import SCENARIOS, Censor, Scenario
from tests.lab.procs import python_argv, start_one_shot
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

SAMPLE = 400
SEED = "reachprobe-lab"
CYCLES = (1, 2)
# Blackholed SYNs take the whole timeout; a short one keeps the sweep quick.
TIMEOUT_SECONDS = 1.0
# Connects in flight per vantage. A sweep outruns the responder's accepts; its deep accept queue
# (simlab.net.LISTEN_BACKLOG) keeps the kernel from dropping SYNs, which would look exactly
# like blackholing.
CONCURRENCY = 64
# SYNs per second of the syn method: the agent's default.
SYN_RATE = 1000
BLOCKED = [ipaddress.ip_network(p) for p in world.SAMPLED_BLOCKED]
TRUTH = 1 - sum(b.num_addresses for b in BLOCKED) / host_count(world.SAMPLED_PREFIX)
# "Unused space" for the join test: refused by the cloud namespace itself, at both vantages.
UNUSED = "10.77.160.0/19"
UNUSED_TABLE = "rpl_unused_space"
UNUSED_RULES = f"""table inet {UNUSED_TABLE} {{
  chain input {{ type filter hook input priority 0; policy accept;
    ip daddr {UNUSED} tcp dport {world.SAMPLED_PORT} reject with tcp reset
  }}
}}
"""


def _blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in BLOCKED)


def start_sweep(
    lab: Lab,
    role: str,
    cycle: int,
    cidr: str = world.SAMPLED_PREFIX,
    size: int = SAMPLE,
    method: str = "connect",
) -> subprocess.Popen[str]:
    """`python -m measure.prefixes` over `cidr` (the sampled /16 unless given), run inside
    `role`'s namespace; the cloud namespace's responder answers on every address it holds."""
    argv = python_argv(
        "-m", "measure.prefixes",
        "--name", "lab", "--cidr", cidr, "--port", str(world.SAMPLED_PORT),
        "--sample", str(size), "--seed", SEED, "--cycle", str(cycle),
        "--timeout", str(TIMEOUT_SECONDS), "--concurrency", str(CONCURRENCY), "--outcomes",
        "--method", method, "--rate", str(SYN_RATE),
    )  # fmt: skip
    return start_one_shot(lab.ns(role), argv)


def sweep_result(proc: subprocess.Popen[str]) -> dict:
    """The JSON the sweep printed (bounded wait)."""
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


def sweep_both(lab: Lab, cycle: int, **options: Any) -> tuple[dict, dict]:
    """The censored and the control vantage's sweeps of one cycle, run at the same time
    (`options` as `start_sweep` takes them)."""
    pending = [start_sweep(lab, role, cycle, **options) for role in (world.CENSORED, world.CONTROL)]
    censored, control = (sweep_result(p) for p in pending)
    return censored, control


@pytest.mark.parametrize(
    ("cycle", "method"), [(CYCLES[0], "connect"), (CYCLES[1], "connect"), (CYCLES[0], "syn")]
)
def test_prefix_sample_estimates_the_blocked_share(
    lab: Lab, censor: Censor, cycle: int, method: str
) -> None:
    censor.apply(SCENARIOS["prefix-sample"])
    censored, control = sweep_both(lab, cycle, method=method)
    expected = sample(world.SAMPLED_PREFIX, SAMPLE, SEED, cycle)

    # Both vantages probed the same addresses, the ones anyone can compute from seed and cycle.
    for result in (censored, control):
        assert [o["address"] for o in result["outcomes"]] == expected
        assert result["sampled"] == SAMPLE
        assert result["method"] == method

    # The control vantage, off the censor's path, sees the whole prefix up.
    assert control["results"] == {"ok": SAMPLE}, control["results"]
    assert (control["ratio"], control["ci_high"]) == (1.0, 1.0)

    # At the censored vantage exactly the blackholed addresses time out.
    for outcome in censored["outcomes"]:
        want = "tcp_timeout" if _blocked(outcome["address"]) else "ok"
        assert outcome["result"] == want, outcome
    blocked = sum(_blocked(a) for a in expected)
    assert 0 < blocked < SAMPLE
    assert censored["results"] == {"ok": SAMPLE - blocked, "tcp_timeout": blocked}
    assert censored["ratio"] == pytest.approx((SAMPLE - blocked) / SAMPLE, abs=1e-6)

    # The estimate's own 95% interval holds the truth, and is narrow enough to mean something.
    assert censored["ci_low"] <= TRUTH <= censored["ci_high"], (censored, TRUTH)
    assert censored["ci_high"] - censored["ci_low"] < 0.1

    censor.remove(SCENARIOS["prefix-sample"])
    again, _ = sweep_both(lab, cycle, method=method)
    assert again["results"] == {"ok": SAMPLE}, again["results"]


def test_syn_and_connect_give_every_address_the_same_code(lab: Lab, censor: Censor) -> None:
    """A censor that blackholes, resets and sends ICMP unreachables in parts of the /16: the
    SYN scan and the connects of the censored vantage agree address for address."""
    cens = lab.ns(world.CENSOR)
    # The censor's per-destination ICMP rate limit would silence most of its unreachables:
    # a connect retransmits its SYN and still hears one, a SYN scan sends one and would not.
    saved = netns.run(["sysctl", "-n", "net.ipv4.icmp_ratelimit"], ns=cens).strip()
    netns.run(["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0"], ns=cens)
    try:
        censor.apply(MIXED)
        by_syn = sweep_result(start_sweep(lab, world.CENSORED, CYCLES[0], method="syn"))
        by_connect = sweep_result(start_sweep(lab, world.CENSORED, CYCLES[0]))
    finally:
        censor.remove(MIXED)
        netns.run(["sysctl", "-q", "-w", f"net.ipv4.icmp_ratelimit={saved}"], ns=cens)
    codes = {o["address"]: o["result"] for o in by_connect["outcomes"]}
    assert {o["address"]: o["result"] for o in by_syn["outcomes"]} == codes
    assert set(codes.values()) == {
        "ok", "tcp_timeout", "tcp_refused", "tcp_host_unreachable", "tcp_net_unreachable"
    }  # fmt: skip


# Disjoint /20s of the sampled /16: every kind of answer a SYN can get, ~25 sampled each.
MIXED = Scenario(
    "prefix-mixed",
    "blackhole, RST and ICMP unreachables in parts of the sampled /16",
    forward=(
        "ip daddr 10.77.16.0/20 drop",
        f"ip daddr 10.77.32.0/20 tcp dport {world.SAMPLED_PORT} reject with tcp reset",
        "ip daddr 10.77.48.0/20 reject with icmp type host-unreachable",
        "ip daddr 10.77.96.0/20 reject with icmp type net-unreachable",
    ),
)


def test_only_control_responsive_addresses_count(lab: Lab, censor: Censor) -> None:
    """Unused space answers nowhere: joined with the control, it drops out of the estimate.

    A /19 of the prefix gets its connects refused on the cloud side, at both vantages, as the
    unused addresses of a real cloud prefix would. The censored vantage's raw ratio then mixes
    blocking with emptiness; restricted to what the control reached, it estimates the blocked
    share of the used addresses.
    """
    unused = ipaddress.ip_network(UNUSED)
    cloud = lab.ns(world.CLOUD)
    netns.run(["nft", "-f", "-"], ns=cloud, input=UNUSED_RULES)
    try:
        censor.apply(SCENARIOS["prefix-sample"])
        censored, control = (as_result(r) for r in sweep_both(lab, CYCLES[0]))
    finally:
        netns.run(["nft", "delete", "table", "inet", UNUSED_TABLE], ns=cloud)
    empty = sum(ipaddress.ip_address(o.address) in unused for o in control.outcomes)
    assert 0 < empty < SAMPLE
    assert control.results == {"ok": SAMPLE - empty, "tcp_refused": empty}

    joined = among_responsive(censored, control)
    assert joined.sampled == SAMPLE - empty
    assert "tcp_refused" not in joined.results
    used = host_count(world.SAMPLED_PREFIX) - unused.num_addresses
    truth = 1 - sum(b.num_addresses for b in BLOCKED) / used
    assert joined.ci_low <= truth <= joined.ci_high, (joined, truth)
    # Without the join, empty space would count as blocked.
    assert censored.ratio < joined.ratio


def as_result(data: dict) -> PrefixResult:
    """A sweep's JSON back as a PrefixResult (with its per-address outcomes)."""
    outcomes = [AddressOutcome(o["address"], o["result"], 0.0) for o in data["outcomes"]]
    return summarize(data["name"], data["cidr"], outcomes)
