"""The public "measure these targets once" entry point (agent/once.py)."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.once import UnknownTargets, measure_once
from simlab.net import closed_port


def config():
    port = closed_port()
    return parse_config(
        {
            "agent": {"timeout": "1s", "listen": None},
            "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1:9"]}},
            "targets": [
                {"name": "a", "tcp": f"127.0.0.1:{port}"},
                {"name": "b", "tcp": f"127.0.0.1:{port}"},
                {"name": "c", "tcp": f"127.0.0.1:{port}"},
            ],
        },
        "t.yaml",
    )


async def test_measures_the_named_targets_once_in_the_config_order() -> None:
    measured = await measure_once(config(), ["c", "a"])
    assert [r.target.name for r in measured.cycle.reports] == ["a", "c"]
    assert {r.verdict.value for r in measured.cycle.reports} == {"tcp_ip_blocking"}
    assert [t.name for t in measured.plan.targets] == ["a", "b", "c"]
    everything = await measure_once(config())
    assert len(everything.cycle.reports) == 3


async def test_an_unknown_name_measures_nothing() -> None:
    seen = []
    with pytest.raises(UnknownTargets, match="no target named x, y") as raised:
        await measure_once(config(), ["a", "y", "x"], on_report=seen.append)
    assert raised.value.names == ("x", "y")
    assert seen == []
