"""The console sink: a cycle printed for people (a table) or programs (the JSON document).

On a terminal the table is drawn by rich, verdicts in colour (and words), with the failing
step, its code, a plain-language explanation and the timings; when the output is not a
terminal, or NO_COLOR is set, it is the plain table that scripts and tests read.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from agent import __version__
from agent.config import AgentSection, Config
from agent.explain import (
    Tone,
    download_rate,
    explain,
    health_problems,
    step_timings,
    verdict_tone,
    verdict_words,
)
from agent.sinks import Sink
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport
from measure.verdict import REACHABLE, first_failure

TARGETS = "\0targets\0"  # stands in for the targets while the rest of the document is dumped


def json_chunks(agent: AgentSection, cycle: CycleReport) -> Iterator[str]:
    """The `check --format json` document (README's schema, with `ooni_failure`), in pieces:
    one target at a time, so that 10,000 targets never stand as one tree of dicts (26 MiB)."""
    doc = {
        "agent": {
            "vantage": agent.vantage,
            "role": agent.role,
            "country": agent.country or None,
            "asn": agent.asn or None,
            "version": __version__,
        },
        "vantage": cycle.vantage.to_json(),
        "targets": [TARGETS] if cycle.reports else [],
        "prefixes": [p.to_json() for p in cycle.prefixes],
    }
    whole = json.dumps(doc, indent=2, ensure_ascii=False)
    if not cycle.reports:
        yield whole
        return
    # The placeholder's line is where the targets go, each indented as json.dumps would
    # indent an element of a list two levels down.
    placeholder = f"    {json.dumps(TARGETS)}\n"
    head, tail = whole.split(placeholder)
    yield head
    for index, report in enumerate(cycle.reports):
        element = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
        yield ("    " if index == 0 else ",\n    ") + element.replace("\n", "\n    ")
    yield "\n" + tail


def to_json(agent: AgentSection, cycle: CycleReport) -> str:
    """The `check --format json` document as one string."""
    return "".join(json_chunks(agent, cycle))


def vantage_line(cycle: CycleReport) -> str | None:
    """One line on the vantage's own health, when something is wrong with it."""
    problems = health_problems(cycle.vantage)
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


def for_people(stream: TextIO) -> bool:
    """True when `stream` is a terminal and colour is not switched off (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


STYLES: dict[Tone, str] = {
    Tone.OK: "bold green",
    Tone.BLOCKED: "bold red",
    Tone.UNKNOWN: "bold yellow",
}


def _style(report: TargetReport) -> str:
    return STYLES[verdict_tone(report.verdict)]


def rich_table(reports: Sequence[TargetReport]) -> Table:
    """The table for people: verdict in words and colour, failing step and code, the
    explanation and the step timings."""
    reachable = sum(r.verdict == REACHABLE for r in reports)
    table = Table(
        title="reachprobe check",
        caption=f"{reachable}/{len(reports)} targets reachable",
        show_lines=True,
    )
    for column in ("target", "verdict", "failing step", "code", "what it means", "timings"):
        table.add_column(column, overflow="fold")
    for report in reports:
        failure = first_failure(report.deciding_steps)
        step = code = meaning = ""
        if report.error is not None:
            meaning = report.error
        elif failure is not None:
            step, code = failure.step.value, failure.result.value
            meaning = explain(failure.result, report.target.host)
            if failure.full_detail:
                meaning += f"\n({failure.full_detail})"
        timings = " ".join(f"{step} {ms:.0f}ms" for step, ms in step_timings(report))
        rate = download_rate(report)
        if rate is not None:
            timings += f"\n{rate:.1f} KiB/s"
        table.add_row(
            report.target.name,
            Text(verdict_words(report.verdict), style=_style(report)),
            step,
            code,
            Text(meaning),
            timings,
        )
    return table


@contextmanager
def live_progress(
    total: int, stream: TextIO | None = None
) -> Iterator[Callable[[TargetReport], None] | None]:
    """A live progress display on `stream` (stderr) while probing; None when it is not a
    terminal. Use the yielded callable as `run_cycle`'s `on_report`."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("probing", total=total)

        def show(report: TargetReport) -> None:
            last = f"{report.target.name}: {verdict_words(report.verdict)}"
            progress.update(task, advance=1, description=last)

        yield show


class ConsoleSink(Sink):
    """Prints each cycle as the JSON document (`json`) or the table (`table`)."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream
        self.agent = AgentSection()

    def configure(self, config: Config, plan: ProbePlan) -> None:
        self.agent = config.agent

    def publish(self, cycle: CycleReport) -> None:
        stream = self.stream or sys.stdout
        if self.fmt == "json":
            for chunk in json_chunks(self.agent, cycle):
                stream.write(chunk)
            stream.write("\n")
            return
        if for_people(stream):
            Console(file=stream).print(rich_table(cycle.reports))
        else:
            print(to_table(cycle.reports), file=stream)
        health = vantage_line(cycle)
        if health:
            print(health, file=stream)
