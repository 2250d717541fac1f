"""IPv6 in the lab: dual-stack targets, and one family's path blocked at a time.

A dual-stack target with one family blocked and the other fine is `reachable` (any working
address is enough), and its report names the family that failed and how: the target's JSON
`families` and the `reachprobe_target_family_up` gauge. Removing the rule brings the family
back at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.lab import observe, world
from tests.lab.agents import CheckResult
from tests.lab.censor import SCENARIOS, Censor
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

DUAL = ("dual-baseline", "dual-v6-blocked", "dual-v4-blocked")
BOTH_FINE = {"ipv4": "reachable", "ipv6": "reachable"}


def tcp_results(check: CheckResult, name: str) -> dict[str, str]:
    """Address -> result of every TCP step the target ran."""
    steps = check.target(name)["steps"]
    return {s["address"]: s["result"] for s in steps if s["step"] == "tcp"}


def endpoints(name: str) -> dict[str, str]:
    """Family -> the target's `ip:port` in that family (IPv6 in brackets)."""
    host = world.HOSTS[name]
    return {"ipv4": f"{host.address}:443", "ipv6": f"[{host.address6}]:443"}


def assert_both_families_work(check: CheckResult, names: tuple[str, ...]) -> None:
    """Each target reachable, with an address of each family tried and working."""
    for name in names:
        assert check.verdict(name) == "reachable", (check.vantage, check.target(name))
        assert check.target(name)["families"] == BOTH_FINE, (check.vantage, check.target(name))
        tried = tcp_results(check, name)
        assert set(endpoints(name).values()) <= set(tried), (check.vantage, tried)
    assert check.exit_code == 0, check.stderr


def test_dual_stack_targets_work_over_both_families(lab: Lab) -> None:
    """Before any rule, each dual-stack target works over IPv4 and IPv6 at both vantages:
    both families are in the first batch of addresses, and both connected."""
    pending = [lab.censored.start_check(*DUAL), lab.control.start_check(*DUAL)]
    for check in pending:
        assert_both_families_work(check.result(), DUAL)


@dataclass(frozen=True)
class FamilyCase:
    """A scenario that blocks one family's path to a dual-stack target."""

    scenario: str
    target: str
    failed: str
    result: str

    @property
    def working(self) -> str:
        return "ipv4" if self.failed == "ipv6" else "ipv6"


FAMILY_CASES = [
    FamilyCase("ipv6-blackhole", "dual-v6-blocked", "ipv6", "tcp_timeout"),
    # A RST in answer to the SYN: connect() is refused (see test_scenarios' `rst`).
    FamilyCase("ipv4-rst", "dual-v4-blocked", "ipv4", "tcp_refused"),
]


@pytest.mark.parametrize("case", FAMILY_CASES, ids=[c.scenario for c in FAMILY_CASES])
def test_one_family_blocked_is_reachable_and_named(
    lab: Lab, censor: Censor, case: FamilyCase
) -> None:
    scenario = SCENARIOS[case.scenario]
    censor.apply(scenario)
    pending = [lab.censored.start_check(case.target), lab.control.start_check(case.target)]
    # The daemon's metrics say the same through Prometheus: the family down, the target up.
    family_up = "reachprobe_target_family_up"
    for family, up in ((case.failed, 0), (case.working, 1)):
        expr = observe.selector(family_up, lab.censored, target=case.target, family=family)
        observe.wait_true(
            lab.prometheus,
            f"{expr} == {up}",
            observe.DETECTION_SECONDS,
            f"censored vantage: {case.target} {family} up={up}",
        )
    observe.wait_up(lab.prometheus, lab.censored, case.target, True, observe.RECOVERY_SECONDS)

    censored, control = (p.result() for p in pending)
    report = censored.target(case.target)
    assert censored.verdict(case.target) == "reachable", report
    assert report["families"] == {case.failed: case.result, case.working: "reachable"}, report
    tried = tcp_results(censored, case.target)
    address = endpoints(case.target)
    assert tried[address[case.failed]] == case.result, tried
    assert tried[address[case.working]] == "ok", tried
    assert censored.exit_code == 0, censored.stderr
    assert_both_families_work(control, (case.target,))
    # Only its own target: the other dual-stack hosts keep both families.
    others = tuple(name for name in DUAL if name != case.target)
    assert_both_families_work(lab.censored.check(*others), others)

    # Recovery: the rule gone, both families work again at once.
    censor.remove(scenario)
    assert_both_families_work(lab.censored.check(case.target), (case.target,))
