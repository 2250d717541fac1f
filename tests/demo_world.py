"""The demo's simulated censored network (simlab.demo) as a test helper: real cycles of the
agent against it, in-process, for the sink tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from agent.config import Config, load_config
from agent.planner import make_plan
from agent.sinks import Sink
from measure.cycle import run_cycle
from measure.plan import ProbePlan
from measure.prober import Prober
from measure.report import CycleReport
from simlab.demo import DemoWorld
from simlab.loopback import HOST
from simlab.net import closed_port, format_hostport


@asynccontextmanager
async def demo_agent(directory: Path, **extra: Any) -> AsyncIterator[tuple[Config, Prober]]:
    """The demo world running, its agent config (plus `extra` top-level sections) and a
    prober for it."""
    world = await DemoWorld(directory).start()
    try:
        data = {**world.config(format_hostport(HOST, closed_port(HOST))), **extra}
        path = directory / "agent.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path)
        prober = Prober(make_plan(config))
        try:
            yield config, prober
        finally:
            await prober.aclose()
    finally:
        await world.close()


async def cycle_of(prober: Prober, number: int = 1) -> CycleReport:
    """One real cycle of every target of the prober's plan."""
    return await run_cycle(prober, prober.plan.targets, number=number)


async def publish_demo_cycle(
    sink: Sink, directory: Path, **extra: Any
) -> tuple[Config, ProbePlan, CycleReport]:
    """Configure `sink` for the demo world (plus `extra` sections) and publish one real cycle
    to it; returns what it was given."""
    async with demo_agent(directory, **extra) as (config, prober):
        cycle = await cycle_of(prober)
    sink.configure(config, prober.plan)
    sink.publish(cycle)
    return config, prober.plan, cycle
