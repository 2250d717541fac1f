"""The censorship scenarios: each applied on the censor, seen by the real agents and Prometheus.

For every scenario: the censored vantage reports the expected result code and verdict, in its
metrics (asked of Prometheus) and in `check --format json`; the control vantage reports the
target reachable; the recording rules mark it blocked at the test vantage; and once the rule is
removed the censored vantage is back to reachable within one interval.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from probes.taxonomy import ooni_failure
from tests.lab import censor as scenarios
from tests.lab import observe, world
from tests.lab.agents import CheckResult
from tests.lab.censor import Censor, Scenario
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

# The first test also builds the lab, and may wait for another run's lab to finish.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

HOSTS = world.HOSTS
REACHABLE = "reachable"
THROTTLE_SAMPLES = 3


@dataclass(frozen=True)
class Case:
    """One blocking scenario and how the censored vantage must see it."""

    scenario: Scenario
    target: str
    step: str
    result: str
    verdict: str
    # Further checks while the scenario is applied: (lab, censored check, control check).
    also: Callable[[Lab, CheckResult, CheckResult], None] | None = None
    # Other targets to include in the `check` runs (for `also`).
    with_targets: tuple[str, ...] = ()


def innocuous_sni_still_works(lab: Lab, censored: CheckResult, control: CheckResult) -> None:
    """Same address, another SNI: the filter is on the name, not the address."""
    assert HOSTS["sni-innocent"].address == HOSTS["sni-blocked"].address
    assert censored.verdict("sni-innocent") == REACHABLE, censored.target("sni-innocent")
    observe.wait_up(lab.prometheus, lab.censored, "sni-innocent", True, observe.RECOVERY_SECONDS)


def control_resolver_gets_truth(target: str) -> Callable[[Lab, CheckResult, CheckResult], None]:
    """The censored agent's DoH control resolver still gets the real address of `target`."""

    def check(lab: Lab, censored: CheckResult, control: CheckResult) -> None:
        expr = observe.selector(
            "reachprobe_target_addresses", lab.censored, target=target, resolver="control"
        )
        observe.wait_true(
            lab.prometheus,
            expr + " >= 1",
            observe.RECOVERY_SECONDS,
            f"censored vantage: DoH control resolver answers for {target}",
        )
        # The JSON names the real address somewhere in the DNS step (answers or detail).
        assert HOSTS[target].address in str(censored.step(target, "dns")), censored.target(target)

    return check


def blockpage_is_named(lab: Lab, censored: CheckResult, control: CheckResult) -> None:
    """The blockpage's fingerprint name is in the HTTP step's detail."""
    assert "lab-isp" in censored.step("http-block", "http")["detail"], censored.target("http-block")


SCENARIOS = scenarios.SCENARIOS

CASES = [
    Case(SCENARIOS["blackhole"], "blackhole", "tcp", "tcp_timeout", "tcp_ip_blocking"),
    # The RST answers the SYN, so the kernel reports ECONNREFUSED: tcp_refused, not tcp_reset.
    Case(SCENARIOS["rst"], "rst", "tcp", "tcp_refused", "tcp_ip_blocking"),
    Case(SCENARIOS["host-unreach"], "host-unreach", "tcp", "tcp_host_unreachable",
         "tcp_ip_blocking"),
    Case(SCENARIOS["net-unreach"], "net-unreach", "tcp", "tcp_net_unreachable",
         "tcp_ip_blocking"),
    Case(SCENARIOS["sni"], "sni-blocked", "tls", "tls_reset", "tls_blocking",
         also=innocuous_sni_still_works, with_targets=("sni-innocent",)),
    Case(SCENARIOS["dns-nxdomain"], "dns-nxdomain", "dns", "dns_nxdomain", "dns_blocking",
         also=control_resolver_gets_truth("dns-nxdomain")),
    Case(SCENARIOS["dns-bogon"], "dns-bogon", "dns", "dns_bogon", "dns_blocking",
         also=control_resolver_gets_truth("dns-bogon")),
    Case(SCENARIOS["dns-injected"], "dns-injected", "dns", "dns_injected", "dns_blocking",
         also=control_resolver_gets_truth("dns-injected")),
    Case(SCENARIOS["http-block"], "http-block", "http", "http_blockpage", "http_blocking",
         also=blockpage_is_named),
]  # fmt: skip


def assert_step(check: CheckResult, target: str, step: str, result: str) -> None:
    """The JSON report has `step` of `target` ending in `result`, with OONI's failure string."""
    entry = check.step(target, step)
    assert entry["result"] == result, check.target(target)
    assert entry["ooni_failure"] == ooni_failure(result), entry


def assert_all_reachable(check: CheckResult, targets: tuple[str, ...] | list[str]) -> None:
    """Every target in the JSON report is reachable (and check exited 0)."""
    verdicts = {name: check.verdict(name) for name in targets}
    assert set(verdicts.values()) == {REACHABLE}, (check.vantage, verdicts, check.report)
    assert check.exit_code == 0, check.stderr


def assert_recovers(lab: Lab, censor: Censor, scenario: Scenario, targets: list[str]) -> None:
    """Remove `scenario`: reachable at once in `check`, and in the metrics within one interval."""
    censor.remove(scenario)
    assert_all_reachable(lab.censored.check(*targets), targets)
    for target in targets:
        observe.wait_verdict(
            lab.prometheus, lab.censored, target, REACHABLE, observe.RECOVERY_SECONDS
        )
        observe.wait_blocked_at_vantage(lab.prometheus, target, False, observe.RECOVERY_SECONDS)


def test_lab_baseline(lab: Lab) -> None:
    """Before any censorship, every target works from both vantages and nothing is blocked."""
    prom = lab.prometheus
    assert {"reachprobe:target_blocked_at_vantage", "reachprobe:target_dominant_failure:5m"} <= (
        prom.rule_names()
    )
    names = list(world.HOSTS)
    pending = [lab.censored.start_check(), lab.control.start_check()]
    for check in pending:
        assert_all_reachable(check.result(), names)
    roles = prom.values("reachprobe_agent_info", "vantage")
    assert set(roles) == {"lab-censored", "lab-control"}
    for agent in (lab.censored, lab.control):
        for name in names:
            observe.wait_up(prom, agent, name, True, observe.RECOVERY_SECONDS)
    observe.wait_true(
        prom,
        "count(reachprobe:target_blocked_at_vantage == 0) == " + str(len(names)),
        observe.RECOVERY_SECONDS,
        "rule: no target blocked before any scenario",
    )


@pytest.mark.parametrize("case", CASES, ids=[c.scenario.name for c in CASES])
def test_blocking_scenario(lab: Lab, censor: Censor, case: Case) -> None:
    prom = lab.prometheus
    censor.apply(case.scenario)
    names = (case.target, *case.with_targets)
    pending = [lab.censored.start_check(*names), lab.control.start_check(*names)]

    # The metrics, through Prometheus: the censored vantage fails the way the censor makes it.
    observe.wait_result(
        prom, lab.censored, case.target, case.step, case.result, observe.DETECTION_SECONDS
    )
    observe.wait_verdict(prom, lab.censored, case.target, case.verdict, observe.RECOVERY_SECONDS)
    observe.wait_verdict(prom, lab.control, case.target, REACHABLE, observe.RECOVERY_SECONDS)
    # The recording rules compare the vantages.
    observe.wait_blocked_at_vantage(prom, case.target, True, observe.RECOVERY_SECONDS)
    observe.wait_dominant_failure(prom, case.target, case.result, observe.DETECTION_SECONDS)
    assert observe.success_gap(prom, case.target) > 0

    # check --format json at both vantages.
    censored, control = (p.result() for p in pending)
    assert censored.verdict(case.target) == case.verdict, censored.target(case.target)
    assert_step(censored, case.target, case.step, case.result)
    assert censored.exit_code == 1
    assert_all_reachable(control, names)
    if case.also:
        case.also(lab, censored, control)

    assert_recovers(lab, censor, case.scenario, [case.target])


def test_throttling_shows_in_durations(lab: Lab, censor: Censor) -> None:
    """A rate limit on one target: its TLS and HTTP durations rise at the censored vantage.

    Throttling has no verdict of its own: the target stays reachable, and the duration ratio
    rule (test vantage over control) is what shows it.
    """
    prom = lab.prometheus
    target = "throttle"
    ratio = "reachprobe:probe_duration_ratio:test_over_control"
    scenario = SCENARIOS["throttle"]
    censor.apply(scenario)
    for step, factor in (("tls", 3), ("http", 10)):
        observe.wait_true(
            prom,
            observe.selector(ratio, target=target, step=step) + f" > {factor}",
            observe.DETECTION_SECONDS,
            f"rule: {target} {step} at least {factor}x slower at the censored vantage",
        )
    observe.wait_true(
        prom,
        observe.selector("reachprobe:http_throughput_ratio:control_over_test", target=target)
        + " > 10",
        observe.DETECTION_SECONDS,
        f"rule: {target} downloads at least 10x faster at the control vantage",
    )
    # Medians of several checks at each vantage, compared as a ratio: one sample of each
    # once failed under CPU load.
    durations: dict[tuple[str, str], list[float]] = {}
    for _ in range(THROTTLE_SAMPLES):
        censored, control = (
            p.result() for p in (lab.censored.start_check(target), lab.control.start_check(target))
        )
        assert censored.verdict(target) == REACHABLE, censored.target(target)
        assert_all_reachable(control, [target])
        for step in ("tls", "http"):
            for side, result in (("censored", censored), ("control", control)):
                duration = result.step(target, step)["duration_seconds"]
                durations.setdefault((side, step), []).append(duration)
    for step in ("tls", "http"):
        slow, fast = (statistics.median(durations[side, step]) for side in ("censored", "control"))
        assert slow > 3 * fast, (step, durations)

    censor.remove(scenario)
    observe.wait_true(
        prom,
        observe.selector(ratio, target=target, step="http") + " < 3",
        observe.RECOVERY_SECONDS,
        f"rule: {target} as fast at both vantages once the shaping is gone",
    )


def test_cloud_prefix_blackhole_collateral(lab: Lab, censor: Censor) -> None:
    """2018 in small: blackholing a cloud /20 for "telegram" takes its neighbours down too."""
    prom = lab.prometheus
    names = list(world.CLOUD_TARGETS)
    scenario = SCENARIOS["cloud-prefix"]
    censor.apply(scenario)
    pending = [lab.censored.start_check(*names), lab.control.start_check(*names)]
    for name in names:
        observe.wait_result(
            prom, lab.censored, name, "tcp", "tcp_timeout", observe.DETECTION_SECONDS
        )
        observe.wait_verdict(prom, lab.censored, name, "tcp_ip_blocking", observe.RECOVERY_SECONDS)
    observe.wait_true(
        prom,
        f'count(reachprobe:target_blocked_at_vantage{{target=~"{"|".join(names)}"}} == 1) '
        f"== {len(names)}",
        observe.RECOVERY_SECONDS,
        "rule: every service in the prefix blocked at the censored vantage",
    )
    # Outside the prefix nothing changed.
    observe.wait_blocked_at_vantage(prom, "baseline", False, observe.RECOVERY_SECONDS)

    censored, control = (p.result() for p in pending)
    for name in names:
        assert censored.verdict(name) == "tcp_ip_blocking", censored.target(name)
        assert_step(censored, name, "tcp", "tcp_timeout")
    assert_all_reachable(control, names)

    assert_recovers(lab, censor, scenario, names)
