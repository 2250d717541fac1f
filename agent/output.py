"""Renders a cycle's reports for people (a table) and for programs (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from agent import __version__
from agent.chain import TargetReport
from agent.config import Config
from agent.verdict import REACHABLE, first_failure


def to_json(config: Config, reports: Sequence[TargetReport]) -> str:
    """The `check --format json` document (DESIGN.md's schema, plus `ooni_failure`)."""
    a = config.agent
    doc = {
        "agent": {
            "vantage": a.vantage,
            "role": a.role,
            "country": a.country or None,
            "asn": a.asn or None,
            "version": __version__,
        },
        "targets": [r.to_json() for r in reports],
        "prefixes": [],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def why(report: TargetReport) -> str:
    """The deciding failure of a report in one line (empty when it is reachable)."""
    if report.error is not None:
        return report.error
    failure = first_failure(report.deciding_steps)
    if failure is None:
        return ""
    where = f" {failure.address}" if failure.address else ""
    detail = f": {failure.detail}" if failure.detail else ""
    return f"{failure.step.value}{where} {failure.result}{detail}"


def to_table(reports: Sequence[TargetReport]) -> str:
    """A plain-text table: target, verdict and, for failures, the step that decided it."""
    rows = [("TARGET", "VERDICT", "WHY")]
    rows += [(r.target.name, r.verdict, why(r)) for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{n:<{widths[0]}}  {v:<{widths[1]}}  {w}".rstrip() for n, v, w in rows]
    reachable = sum(r.verdict == REACHABLE for r in reports)
    lines.append(f"\n{reachable}/{len(reports)} targets reachable")
    return "\n".join(lines)
