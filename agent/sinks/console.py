"""The console sink: a cycle printed for people (a table) or programs (the JSON document)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from agent import __version__
from agent.config import AgentSection, Config
from agent.sinks import Sink
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport
from measure.verdict import REACHABLE


def to_json(agent: AgentSection, cycle: CycleReport) -> str:
    """The `check --format json` document (README's schema, with `ooni_failure`)."""
    doc = {
        "agent": {
            "vantage": agent.vantage,
            "role": agent.role,
            "country": agent.country or None,
            "asn": agent.asn or None,
            "version": __version__,
        },
        "vantage": cycle.vantage.to_json(),
        "targets": [r.to_json() for r in cycle.reports],
        "prefixes": [],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def vantage_line(cycle: CycleReport) -> str | None:
    """One line on the vantage's own health, when something is wrong with it."""
    health = cycle.vantage
    problems = []
    if health.connectivity_up is False:
        codes = ", ".join(c.value for c in health.canary_failures)
        problems.append(f"all {health.canaries} canaries failed ({codes}): connectivity is down")
    if health.nxdomain_hijacked:
        problems.append("the resolver answers names that do not exist (NXDOMAIN hijacking)")
    if health.tcp_intercepted:
        problems.append("a middlebox accepts every TCP connection")
    return f"vantage: {'; '.join(problems)}" if problems else None


def to_table(reports: Sequence[TargetReport]) -> str:
    """A plain-text table: target, verdict and, for failures, the step that decided it."""
    rows = [("TARGET", "VERDICT", "WHY")]
    rows += [(r.target.name, r.verdict.value, r.why()) for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{n:<{widths[0]}}  {v:<{widths[1]}}  {w}".rstrip() for n, v, w in rows]
    reachable = sum(r.verdict == REACHABLE for r in reports)
    lines.append(f"\n{reachable}/{len(reports)} targets reachable")
    return "\n".join(lines)


class ConsoleSink(Sink):
    """Prints each cycle as the JSON document (`json`) or the table (`table`)."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream
        self.agent = AgentSection()

    def configure(self, config: Config, plan: ProbePlan) -> None:
        self.agent = config.agent

    def publish(self, cycle: CycleReport) -> None:
        if self.fmt == "json":
            text = to_json(self.agent, cycle)
        else:
            text = to_table(cycle.reports)
            health = vantage_line(cycle)
            text = f"{text}\n{health}" if health else text
        print(text, file=self.stream or sys.stdout)
