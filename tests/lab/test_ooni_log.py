"""OONI's own data package (`oonidata`) loads every line the lab's agents wrote to their
measurement logs, with a scenario at each layer applied on the censor (issue 23): the records
of real kernel-level blocking come out of OONI's loader as they went in."""

from __future__ import annotations

import time

import pytest

from tests.lab import censor as scenarios
from tests.lab import observe
from tests.lab.censor import Censor
from tests.lab.topology import Lab, skip_unless_lab_can_run
from tests.ooni_log import load_log

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

# (scenario, its target, the censored vantage's verdict): one per layer.
LAYERS = (
    ("dns-nxdomain", "dns-nxdomain", "dns_blocking"),
    ("blackhole", "blackhole", "tcp_ip_blocking"),
    ("sni", "sni-blocked", "tls_blocking"),
    ("http-block", "http-block", "http_blocking"),
)


def _verdicts(records: list[dict]) -> set[tuple[str, str]]:
    return {(r["test_keys"]["target"], r["test_keys"]["verdict"]) for r in records}


def test_oonidata_loads_the_lab_agents_logs(lab: Lab, censor: Censor) -> None:
    for name, target, verdict in LAYERS:
        with censor.scenario(scenarios.SCENARIOS[name]):
            observe.wait_verdict(
                lab.prometheus, lab.censored, target, verdict, observe.DETECTION_SECONDS
            )
            # The log is written just after the cycle's metrics: wait for its line.
            deadline = time.monotonic() + observe.RECOVERY_SECONDS
            while (target, verdict) not in _verdicts(
                [r for r, _ in load_log(lab.censored.measurement_log)]
            ):
                assert time.monotonic() < deadline, f"no {verdict} line for {target}"
                time.sleep(0.5)
    censored = load_log(lab.censored.measurement_log)
    control = load_log(lab.control.measurement_log)
    assert {(t, v) for _, t, v in LAYERS} <= _verdicts([r for r, _ in censored])
    assert {v for _, v in _verdicts([r for r, _ in control])} == {"reachable"}
    for record, model in censored:
        assert (model["probe_cc"], model["probe_asn"]) == ("RU", "AS64500"), record["input"]
        assert model["probe_ip"] == "127.0.0.1"
