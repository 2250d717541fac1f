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


def to_json(agent: AgentSection, reports: Sequence[TargetReport]) -> str:
    """The `check --format json` document (README's schema, with `ooni_failure`)."""
    doc = {
        "agent": {
            "vantage": agent.vantage,
            "role": agent.role,
            "country": agent.country or None,
            "asn": agent.asn or None,
            "version": __version__,
        },
        "targets": [r.to_json() for r in reports],
        "prefixes": [],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


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
        text = to_json(self.agent, cycle.reports) if self.fmt == "json" else to_table(cycle.reports)
        print(text, file=self.stream or sys.stdout)
