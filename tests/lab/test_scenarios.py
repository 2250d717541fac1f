"""The censorship scenarios: each applied on the censor, seen by the real agents and Prometheus.

For every scenario: the censored vantage reports the expected result code and verdict, in its
metrics (asked of Prometheus) and in `check --format json`; the control vantage reports the
target reachable; the recording rules mark it blocked at the test vantage; and once the rule is
removed the censored vantage is back to reachable within one interval.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from probes.browser import CONTROL_NAME
from probes.taxonomy import ooni_failure
from tests.lab import censor as scenarios
from tests.lab import observe, world
from tests.lab.agents import CheckResult
from tests.lab.censor import Censor, Scenario
from tests.lab.test_prefix_sampling import sweep_both
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

# The first test also builds the lab, and may wait for another run's lab to finish.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

HOSTS = world.HOSTS
REACHABLE = "reachable"
THROTTLE_SAMPLES = 3
# Addresses of the cloud /20 sampled in the per-/24 test: enough to hit every blackholed /24
# (asserted), one connect round at the sweep's concurrency.
CLOUD_SAMPLE = 64


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


def same_address_other_name_works(
    blocked: str, other: str
) -> Callable[[Lab, CheckResult, CheckResult], None]:
    """`other`, on the same address as `blocked` under another name, is reachable: the filter
    is on the name (an SNI, a Host header), not the address."""

    def check(lab: Lab, censored: CheckResult, control: CheckResult) -> None:
        assert HOSTS[other].address == HOSTS[blocked].address
        assert censored.verdict(other) == REACHABLE, censored.target(other)
        observe.wait_up(lab.prometheus, lab.censored, other, True, observe.RECOVERY_SECONDS)

    return check


def innocuous_sni_gets_through(lab: Lab, censored: CheckResult, control: CheckResult) -> None:
    """The agent's repeat with an innocuous SNI to the same address did not time out: the
    evidence (`data.control_sni`) pins the silence on the name."""
    tls = censored.step("sni-dropped", "tls")
    repeat = tls["data"]["control_sni"]
    assert repeat["sni"] == CONTROL_NAME, tls
    assert repeat["triggered"] is True, tls
    # The lab's certificate is not for the innocuous name: the handshake completed far enough
    # to say so, which the dropped ClientHello never does.
    assert repeat["result"] == "tls_hostname_mismatch", tls
    assert "SNI-based" in tls["detail"], tls


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
         also=same_address_other_name_works("sni-blocked", "sni-innocent"),
         with_targets=("sni-innocent",)),
    # The ClientHello vanishes: a timeout, which only the innocuous-SNI repeat attributes.
    Case(SCENARIOS["sni-drop"], "sni-dropped", "tls", "tls_timeout", "tls_blocking",
         also=innocuous_sni_gets_through),
    # The handshake passes, the request with the Host header is answered with a RST.
    Case(SCENARIOS["http-rst"], "http-rst", "http", "http_reset", "http_blocking",
         also=same_address_other_name_works("http-rst", "http-rst-innocent"),
         with_targets=("http-rst-innocent",)),
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

    assert_recovers(lab, censor, case.scenario, list(names))


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


def test_dns_hijack_to_the_blockpage_server(lab: Lab, censor: Censor) -> None:
    """The test resolver answers the blockpage server's address; DoH tells the truth.

    Unlike `http-block` (the right address, its HTTP replaced: http_blocking), the lie is in
    DNS, so the verdict is dns_blocking; unlike `http-hijack` (a page no fingerprint knows), the
    page behind the lie is a known blockpage, named in the HTTP step. Over HTTPS the blockpage
    server's certificate is for its own name: the answer fails TLS validation for the target's
    name, which with the control's other answer makes it dns_inconsistent too.
    """
    prom = lab.prometheus
    scenario = SCENARIOS["dns-blockpage"]
    names = ("dns-blockpage", "dns-blockpage-tls")
    censor.apply(scenario)
    pending = [lab.censored.start_check(*names), lab.control.start_check(*names)]
    for name in names:
        observe.wait_result(
            prom, lab.censored, name, "dns", "dns_inconsistent", observe.DETECTION_SECONDS
        )
        observe.wait_verdict(prom, lab.censored, name, "dns_blocking", observe.RECOVERY_SECONDS)
        observe.wait_verdict(prom, lab.control, name, REACHABLE, observe.RECOVERY_SECONDS)
        observe.wait_blocked_at_vantage(prom, name, True, observe.RECOVERY_SECONDS)

    censored, control = (p.result() for p in pending)
    for name, step, result in (
        ("dns-blockpage", "http", "http_blockpage"),
        ("dns-blockpage-tls", "tls", "tls_hostname_mismatch"),
    ):
        assert censored.verdict(name) == "dns_blocking", censored.target(name)
        assert_step(censored, name, "dns", "dns_inconsistent")
        # The lie and the control's truth, both in the DNS step's data.
        data = censored.step(name, "dns")["data"]
        assert data["addresses"] == [world.BLOCKPAGE_ADDRESS], data
        assert data["control"]["addresses"] == [HOSTS[name].address], data
        # What the lie led to, at the blockpage server.
        assert_step(censored, name, step, result)
        assert censored.step(name, step)["address"].startswith(world.BLOCKPAGE_ADDRESS + ":")
    assert "lab-isp" in censored.step("dns-blockpage", "http")["detail"]
    assert_all_reachable(control, names)

    assert_recovers(lab, censor, scenario, list(names))


def in_blocked_24(address: str) -> bool:
    """True if `address` is in one of the /24s the `cloud-24s` scenario blackholes."""
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(net) for net in world.CLOUD_BLOCKED_24S)


def results_per_24(sweep: dict) -> dict[str, set[str]]:
    """A prefix sweep's outcomes grouped by /24: each sampled /24 and the results in it."""
    per_24: dict[str, set[str]] = {}
    for outcome in sweep["outcomes"]:
        net = ipaddress.ip_network(f"{outcome['address']}/24", strict=False)
        per_24.setdefault(str(net), set()).add(outcome["result"])
    return per_24


def test_cloud_blackhole_per_24(lab: Lab, censor: Censor) -> None:
    """2018 at /24 granularity: the censor blackholes some /24s of the cloud /20, not others.

    Targets in the blackholed /24s time out, their neighbours in the other /24s of the same /20
    stay reachable; a prefix sample of the /20 shows the same picture address by address.
    """
    prom = lab.prometheus
    names = list(world.CLOUD_TARGETS)
    blocked = [name for name in names if in_blocked_24(HOSTS[name].address)]
    spared = [name for name in names if name not in blocked]
    scenario = SCENARIOS["cloud-24s"]
    censor.apply(scenario)
    pending = [lab.censored.start_check(*names), lab.control.start_check(*names)]
    sweep, control_sweep = sweep_both(lab, 1, cidr=world.CLOUD_PREFIX, size=CLOUD_SAMPLE)
    for name in blocked:
        observe.wait_verdict(prom, lab.censored, name, "tcp_ip_blocking", observe.RECOVERY_SECONDS)
        observe.wait_blocked_at_vantage(prom, name, True, observe.RECOVERY_SECONDS)
    for name in spared:
        observe.wait_verdict(prom, lab.censored, name, REACHABLE, observe.RECOVERY_SECONDS)
        observe.wait_blocked_at_vantage(prom, name, False, observe.RECOVERY_SECONDS)

    censored, control = (p.result() for p in pending)
    for name in blocked:
        assert censored.verdict(name) == "tcp_ip_blocking", censored.target(name)
        assert_step(censored, name, "tcp", "tcp_timeout")
    for name in spared:
        assert censored.verdict(name) == REACHABLE, censored.target(name)
    assert_all_reachable(control, names)

    # The sample by /24: each blackholed /24 nothing but timeouts, every other one all connects.
    per_24 = results_per_24(sweep)
    assert set(world.CLOUD_BLOCKED_24S) < set(per_24), "the sample missed a blackholed /24"
    want = {net: {"tcp_timeout" if net in world.CLOUD_BLOCKED_24S else "ok"} for net in per_24}
    assert per_24 == want, per_24
    assert control_sweep["results"] == {"ok": CLOUD_SAMPLE}, control_sweep["results"]

    assert_recovers(lab, censor, scenario, names)
