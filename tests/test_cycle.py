"""A cycle keeps its reports in the targets' order however their starts are spread, with a
bounded number of targets (and tasks) in flight whatever the number of targets."""

from __future__ import annotations

import asyncio

import pytest

from agent.config import parse_config
from agent.planner import make_plan
from measure import cycle
from measure.prober import Prober
from simlab.loopback import HOST, closed_port


async def test_reports_keep_the_targets_order_and_tasks_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cycle, "MIN_IN_FLIGHT", 4)  # in_flight(1) == 8
    port = closed_port(HOST)
    config = parse_config(
        {
            "agent": {"timeout": "1s", "concurrency": 1, "listen": None},
            "resolvers": {"test": {"type": "udp", "servers": [f"{HOST}:{port}"]}},
            "targets": [{"name": f"t{i:03d}", "tcp": f"{HOST}:{port}"} for i in range(120)],
        },
        "t.yaml",
    )
    plan = make_plan(config)
    prober = Prober(plan)
    most_tasks = 0

    def seen(_: object) -> None:
        nonlocal most_tasks
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))

    try:
        done = await cycle.run_cycle(prober, plan.targets, jitter=0.2, on_report=seen)
    finally:
        await prober.aclose()
    assert [r.target.name for r in done.reports] == [t.name for t in plan.targets]
    assert {r.verdict for r in done.reports} == {"tcp_ip_blocking"}
    # The workers, the cycle, the vantage checks (done at once here) and the test itself.
    assert most_tasks <= cycle.in_flight(1) + 3
