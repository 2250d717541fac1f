"""Nothing a lab agent outputs identifies its vantage's machine.

The loopback identity test (tests/test_identity.py) cannot see a leaked *source* address: on
loopback it is 127.0.0.1. In the lab each agent's namespace has real interface addresses and
MACs on the links it probes through, so its metrics, `check` JSON and log are searched for
them here. Addresses the agent's own config names (its `listen` address) are the volunteer's
choice and are not looked for.
"""

from __future__ import annotations

import json

import pytest

from tests.identity import Needle, address_needle, leaks, mac_needle
from tests.lab import netns
from tests.lab.agents import Agent
from tests.lab.topology import Lab, skip_unless_lab_can_run

skip_unless_lab_can_run()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


def namespace_needles(agent: Agent) -> list[Needle]:
    """The non-loopback addresses and MACs of the agent's namespace, minus configured ones."""
    configured = agent.config_file.read_text()
    needles: list[Needle | None] = []
    for link in json.loads(netns.run(["ip", "-json", "address", "show"], ns=agent.ns)):
        needles.append(mac_needle(link.get("address", "")))
        needles += [address_needle(info["local"]) for info in link.get("addr_info", [])]
    return [n for n in needles if n is not None and not n.pattern.search(configured)]


@pytest.mark.parametrize("role", ["censored", "control"])
def test_lab_agent_outputs_do_not_identify_its_machine(lab: Lab, role: str) -> None:
    agent: Agent = getattr(lab, role)
    needles = namespace_needles(agent)
    assert any(n.kind == "IPv4 address" for n in needles), "the namespace has no address?"
    check = agent.check()
    surfaces = {
        "/metrics": agent.metrics_text(),
        "check --format json": json.dumps(check.report),
        "check stderr": check.stderr,
        "run log": agent.log_path.read_text(errors="replace"),
    }
    assert '"steps"' in surfaces["check --format json"]
    found = {name: leaks(text, needles) for name, text in surfaces.items()}
    assert not any(found.values()), found
