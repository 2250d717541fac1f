"""QUIC / HTTP/3 blocking in the lab: the web namespace serves HTTP/3 on UDP 443 (simlab h3),
and the censor drops either all UDP 443 to one address or only the QUIC Initial packets to one
address (an nftables payload match on the long header's type and version).

Each time the blocked target stays `reachable` (its TCP/TLS path works, and browsers fall
back to it) with its QUIC step `quic_timeout` and the "HTTP/3 blocked" note, in the JSON and
in Prometheus (`reachprobe_probe_success{step="quic"}` 0 beside `reachprobe_target_up` 1, and
the rule `reachprobe:quic_blocked_at_vantage` 1 while `target_blocked_at_vantage` is 0); the
other HTTP/3 target, on another address, keeps its QUIC; the control vantage sees both work;
and once the rule is removed the QUIC step works again within one interval.
"""

from __future__ import annotations

import re

import pytest

from tests.lab import netns, observe, world
from tests.lab.agents import Agent, CheckResult
from tests.lab.censor import SCENARIOS, Censor
from tests.lab.prometheus import Prometheus
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

REACHABLE = "reachable"
TARGETS = world.HTTP3_TARGETS


def quic_step(check: CheckResult, name: str) -> dict:
    (step,) = [s for s in check.target(name)["steps"] if s["step"] == "quic"]
    return step


def wait_quic(prom: Prometheus, agent: Agent, target: str, up: bool, timeout: float) -> None:
    """Wait until the agent's last QUIC step of `target` worked (`up`) or failed."""
    expr = observe.selector("reachprobe_probe_success", agent, target=target, step="quic")
    state = "works" if up else "fails"
    observe.wait_true(
        prom, f"{expr} == {int(up)}", timeout, f"{agent.vantage.vantage}: {target} QUIC {state}"
    )


def wait_quic_blocked(prom: Prometheus, target: str, blocked: bool, timeout: float) -> None:
    """Wait until the rule marks `target`'s HTTP/3 as blocked at the test vantage (or not)."""
    expr = observe.selector("reachprobe:quic_blocked_at_vantage", target=target)
    state = int(blocked)
    observe.wait_true(prom, f"{expr} == {state}", timeout, f"rule: {target} QUIC blocked {state}")


def assert_quic_works(check: CheckResult, names: tuple[str, ...]) -> None:
    for name in names:
        entry = check.target(name)
        assert entry["verdict"] == REACHABLE, entry
        assert entry["quic"] == {"result": "ok"}, entry
        assert quic_step(check, name)["data"]["status"] == 200, entry


def initial_drops(censor: Censor, table: str) -> int:
    """Packets the scenario's nftables rule has dropped so far (its counter)."""
    listing = netns.run(["nft", "list", "table", "inet", table], ns=censor.ns)
    match = re.search(r"counter packets (\d+)", listing)
    assert match, listing
    return int(match.group(1))


@pytest.mark.parametrize(("scenario", "blocked"), [("quic-udp", "quic-udp"),
                                                   ("quic-initial", "quic-initial")])  # fmt: skip
def test_quic_blocking_leaves_the_target_reachable_with_a_note(
    lab: Lab, censor: Censor, scenario: str, blocked: str
) -> None:
    prom = lab.prometheus
    other = next(name for name in TARGETS if name != blocked)
    assert world.HOSTS[other].address != world.HOSTS[blocked].address
    applied = SCENARIOS[scenario]
    censor.apply(applied)
    pending = [lab.censored.start_check(*TARGETS), lab.control.start_check(*TARGETS)]

    # Prometheus: the QUIC step fails, the target stays up and reachable, not blocked.
    observe.wait_result(
        prom, lab.censored, blocked, "quic", "quic_timeout", observe.DETECTION_SECONDS
    )
    observe.wait_verdict(prom, lab.censored, blocked, REACHABLE, observe.RECOVERY_SECONDS)
    observe.wait_up(prom, lab.censored, blocked, True, observe.RECOVERY_SECONDS)
    observe.wait_blocked_at_vantage(prom, blocked, False, observe.RECOVERY_SECONDS)
    wait_quic(prom, lab.censored, other, True, observe.RECOVERY_SECONDS)
    wait_quic(prom, lab.control, blocked, True, observe.RECOVERY_SECONDS)
    # The rules: HTTP/3 blocked at the test vantage, the target itself not.
    wait_quic_blocked(prom, blocked, True, observe.RECOVERY_SECONDS)
    wait_quic_blocked(prom, other, False, observe.RECOVERY_SECONDS)

    # check --format json at both vantages.
    censored, control = (p.result() for p in pending)
    entry = censored.target(blocked)
    assert entry["verdict"] == REACHABLE, entry
    assert entry["quic"]["result"] == "quic_timeout", entry
    assert "HTTP/3 blocked" in entry["quic"]["note"], entry
    step = quic_step(censored, blocked)
    assert step["ooni_failure"] == "generic_timeout_error", step
    # Silence, not garbage: the Initial and its retransmissions got nothing back.
    assert "none received" in step["detail"], step
    assert censored.exit_code == 0, censored.report  # QUIC alone never fails a check
    assert_quic_works(censored, (other,))
    assert_quic_works(control, TARGETS)
    if scenario == "quic-initial":
        # The payload match is what dropped them: the agent's Initials hit the rule.
        assert initial_drops(censor, applied.table) > 0

    censor.remove(applied)
    assert_quic_works(lab.censored.check(*TARGETS), TARGETS)
    wait_quic(prom, lab.censored, blocked, True, observe.RECOVERY_SECONDS)
    wait_quic_blocked(prom, blocked, False, observe.RECOVERY_SECONDS)
