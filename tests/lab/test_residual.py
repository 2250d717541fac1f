"""Residual blocking in the lab (issue 22): a ClientHello with the blocked name silences the
address and port for the client for a few seconds (an nftables dynamic set with a timeout,
keyed on client, server and port), so that the confirmation retry and the innocuous-SNI
re-check meet silence at the SYN.

The censored agent reports the blocked name `tls_blocking` with the residual evidence, in its
JSON and in `reachprobe_target_residual_blocking`, and the innocent name on the same address
never `tcp_ip_blocking`; once the scenario is removed both are reachable and the gauge is 0.
"""

from __future__ import annotations

import time

import pytest

from tests.lab import netns, observe, world
from tests.lab.censor import RESIDUAL_SECONDS, SCENARIOS, Censor
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

BLOCKED, INNOCENT = "residual-blocked", "residual-innocent"
ENDPOINT = f"{world.HOSTS[BLOCKED].address}:443"
SCENARIO = SCENARIOS["residual"]
NOT_FOR_THE_INNOCENT = ("tcp_ip_blocking", "tls_blocking", "http_blocking")


def silenced_flows(censor: Censor) -> str:
    """The elements of the censor's residual set (empty once every block timed out)."""
    listing = netns.run(["nft", "list", "set", "inet", SCENARIO.table, "residual"], ns=censor.ns)
    return listing.partition("elements")[2]


def wait_unsilenced(censor: Censor) -> None:
    """Until the censor's set is empty: a block lasts RESIDUAL_SECONDS after its trigger."""
    deadline = time.monotonic() + RESIDUAL_SECONDS + 5
    while silenced_flows(censor):
        assert time.monotonic() < deadline, silenced_flows(censor)
        time.sleep(0.2)


def test_residual_blocking(lab: Lab, censor: Censor) -> None:
    prom = lab.prometheus
    agent = lab.censored
    applied = time.monotonic()
    censor.apply(SCENARIO)

    # The running agent, through Prometheus.
    residual = observe.selector("reachprobe_target_residual_blocking", agent, target=BLOCKED)
    observe.wait_true(prom, residual + " == 1", observe.DETECTION_SECONDS, "residual gauge")
    observe.wait_verdict(prom, agent, BLOCKED, "tls_blocking", observe.DETECTION_SECONDS)
    observe.wait_verdict(prom, lab.control, BLOCKED, "reachable", observe.RECOVERY_SECONDS)
    window = f"{int(time.monotonic() - applied) + 1}s"
    for verdict in NOT_FOR_THE_INNOCENT:
        innocent = observe.selector(
            "reachprobe_target_verdict", agent, target=INNOCENT, verdict=verdict
        )
        observe.wait_true(
            prom,
            f"max_over_time({innocent}[{window}]) == 0",
            observe.RECOVERY_SECONDS,
            f"{INNOCENT} never {verdict} while the address was silenced after {BLOCKED}",
        )

    # check --format json, with the daemon stopped so that its own triggers stay out.
    agent.stop()
    try:
        wait_unsilenced(censor)
        censored = agent.check(BLOCKED)
        report = censored.target(BLOCKED)
        assert report["verdict"] == "tls_blocking", report
        tls = censored.step(BLOCKED, "tls")
        assert tls["result"] == "tls_timeout", tls
        assert tls["data"]["retry"]["result"] == "tcp_timeout", tls
        assert tls["data"]["retry"]["note"] == "the address went silent after the trigger", tls
        assert tls["data"]["control_sni"]["result"] == "tcp_timeout", tls
        assert report["residual"] == {
            "endpoint": ENDPOINT,
            "trigger": BLOCKED,
            "seen_by": "sni_recheck",
        }, report
        # Without the trigger the innocent name's address answers: the block is the name's.
        wait_unsilenced(censor)
        assert agent.check(INNOCENT).verdict(INNOCENT) == "reachable"
        # Both at once: whatever the race between the two names, the innocent one is never
        # given an IP, TLS or HTTP block.
        wait_unsilenced(censor)
        both = agent.check(BLOCKED, INNOCENT)
        assert both.verdict(INNOCENT) not in NOT_FOR_THE_INNOCENT, both.target(INNOCENT)
    finally:
        agent.start()
        agent.wait_serving(time.monotonic() + 30)

    # Recovery: the block is gone with the scenario.
    censor.remove(SCENARIO)
    recovered = agent.check(BLOCKED, INNOCENT)
    assert {recovered.verdict(n) for n in (BLOCKED, INNOCENT)} == {"reachable"}, recovered.report
    assert "residual" not in recovered.target(BLOCKED)
    for name in (BLOCKED, INNOCENT):
        observe.wait_verdict(prom, agent, name, "reachable", observe.RECOVERY_SECONDS)
    observe.wait_true(prom, residual + " == 0", observe.RECOVERY_SECONDS, "residual gauge 0")
