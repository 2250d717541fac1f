"""Measure these targets once: the public entry point from a config to one cycle's report.

`check`, the tests and the demo's one-shot mode use it instead of wiring config -> plan ->
prober -> cycle themselves; the running agent's scheduler keeps one prober across cycles
instead (a prober remembers residual-blocking triggers between cycles, docs/taxonomy.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.config import Config, TargetConfig
from agent.planner import make_plan
from measure.cycle import run_cycle
from measure.plan import ProbePlan
from measure.prober import Prober
from measure.report import CycleReport, TargetReport


class UnknownTargets(ValueError):
    """Names asked for that the config has no target of."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(f"no target named {', '.join(names)}")
        self.names = tuple(names)


@dataclass(frozen=True, slots=True)
class Measured:
    """What one measurement produced: the plan it ran and the cycle's report."""

    plan: ProbePlan
    cycle: CycleReport


def selected(config: Config, names: Sequence[str] | None) -> list[TargetConfig]:
    """The config's targets named in `names` (all of them without names), in the config's
    order; `UnknownTargets` for a name the config does not have."""
    if not names:
        return list(config.targets)
    unknown = sorted(set(names) - {t.name for t in config.targets})
    if unknown:
        raise UnknownTargets(unknown)
    return [t for t in config.targets if t.name in names]


async def measure_once(
    config: Config,
    names: Sequence[str] | None = None,
    *,
    trace: bool = False,
    on_report: Callable[[TargetReport], None] | None = None,
) -> Measured:
    """One cycle of the config's targets (only `names`, in the config's order, if given),
    on a prober of its own that is closed after; `trace` runs the raw follow-ups on every
    target (`check --trace`). Raises `UnknownTargets` before measuring anything when a name
    is not configured."""
    wanted = {t.name for t in selected(config, names)}
    plan = make_plan(config, forced_trace=trace)
    targets = tuple(t for t in plan.targets if t.name in wanted)
    prober = Prober(plan)
    try:
        cycle = await run_cycle(prober, targets, on_report=on_report, number=1)
    finally:
        await prober.aclose()
    return Measured(plan, cycle)
