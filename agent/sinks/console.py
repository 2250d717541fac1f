"""The console sink: a cycle printed for people (a table) or programs (the JSON document).

On a terminal the table is drawn by rich, verdicts in colour (and words and symbols), with
the failing code and a plain-language explanation, wrapped at word boundaries to the
terminal's width (80 columns fit; the step timings get a column from 120 up), and drawn a
hundred targets at a time; when the output is not a terminal it is the plain table that
scripts and tests read; NO_COLOR takes only the colour away.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from agent import __version__
from agent.config import AgentSection, Config
from agent.explain import (
    SYMBOLS,
    Tone,
    download_rate,
    explain,
    health_problems,
    rate_size,
    slow_downloads,
    step_timings,
    verdict_tone,
    verdict_words,
)
from agent.sinks import Sink
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport
from measure.verdict import REACHABLE, first_failure

# Stands in for the targets while the rest of the document is dumped.
TARGETS = "\0targets\0"
# The table for people: at most this many targets per piece drawn (10,000 targets draw as
# they go, not after seconds of nothing), and its columns' widths.
ROWS_PER_TABLE = 100
TARGET_MAX_WIDTH, VERDICT_MAX_WIDTH = 20, 25
TIMINGS_MIN_WIDTH, TIMINGS_WIDTH = 120, 30


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
    """A plain-text table: target, verdict and, for failures, the step that decided it (for a
    download much slower than the rest, why it is slow)."""
    slow = slow_downloads(reports)
    rows = [("TARGET", "VERDICT", "WHY")]
    rows += [
        (r.target.name, r.verdict.value, r.why() or slow.get(r.target.name, "")) for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{n:<{widths[0]}}  {v:<{widths[1]}}  {w}".rstrip() for n, v, w in rows]
    reachable = sum(r.verdict == REACHABLE for r in reports)
    lines.append(f"\n{reachable}/{len(reports)} targets reachable")
    return "\n".join(lines)


def for_people(stream: TextIO) -> bool:
    """True when `stream` is a terminal. NO_COLOR (no-color.org) takes only the colour away:
    the table keeps its words."""
    return stream.isatty()


STYLES: dict[Tone, str] = {
    Tone.OK: "bold green",
    Tone.BLOCKED: "bold red",
    Tone.UNKNOWN: "bold yellow",
}


def _what(report: TargetReport, slow: dict[str, str]) -> Text:
    """The "what happened" cell: the failing step's code and its explanation (and detail),
    or why a reachable target is slow, or what its report notes (one family, HTTP/3), or
    that every step worked."""
    failure = first_failure(report.deciding_steps)
    if report.error is not None:
        return Text(report.error)
    if failure is None:
        return Text(slow.get(report.target.name) or report.why() or "every step worked")
    text = Text.assemble(
        (failure.result.value, "bold"), f": {explain(failure.result, report.target.host)}"
    )
    if failure.full_detail:
        text.append(f" ({failure.full_detail})", style="dim")
    quic = report.quic_note()
    if quic is not None:
        text.append(f" {quic}", style="dim")
    return text


def _timings(report: TargetReport) -> str:
    timings = " ".join(f"{step} {ms:.0f}ms" for step, ms in step_timings(report))
    rate = download_rate(report)
    return timings if rate is None else f"{timings} {rate_size(rate * 1024)}"


def rich_tables(
    reports: Sequence[TargetReport],
    width: int,
    rows: int = ROWS_PER_TABLE,
    title: str = "reachprobe check",
) -> Iterator[Table]:
    """The table for people, `rows` targets at a time (so that a long one shows as it is
    drawn), every piece with the same columns and the caption under the last: target,
    verdict in words, symbol and colour, and what happened. Wrapped at word boundaries to
    `width`; the step timings get a column from `TIMINGS_MIN_WIDTH` up."""
    names = max((len(r.target.name) for r in reports), default=0)
    target_width = max(len("target"), min(names, TARGET_MAX_WIDTH))
    words = max((len(verdict_words(r.verdict)) for r in reports), default=0) + 2
    verdict_width = max(len("verdict"), min(words, VERDICT_MAX_WIDTH))
    timings = width >= TIMINGS_MIN_WIDTH
    slow = slow_downloads(reports)
    reachable = sum(r.verdict == REACHABLE for r in reports)
    for first in range(0, max(len(reports), 1), rows):
        last = first + rows >= len(reports)
        table = Table(
            box=box.SIMPLE_HEAD,
            width=width,
            title=title if first == 0 else None,
            show_header=first == 0,
            show_edge=False,
            pad_edge=False,
            caption=f"{reachable}/{len(reports)} targets reachable" if last else None,
        )
        table.add_column("target", width=target_width, overflow="fold")
        table.add_column("verdict", width=verdict_width)
        table.add_column("what happened", ratio=1, overflow="fold")
        if timings:
            table.add_column("timings", width=TIMINGS_WIDTH)
        for report in reports[first : first + rows]:
            kind = verdict_tone(report.verdict)
            verdict = Text(f"{SYMBOLS[kind]} {verdict_words(report.verdict)}", style=STYLES[kind])
            cells = [report.target.name, verdict, _what(report, slow)]
            table.add_row(*cells, *([_timings(report)] if timings else []))
        yield table


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

    def __init__(
        self, fmt: str, stream: TextIO | None = None, title: str = "reachprobe check"
    ) -> None:
        self.fmt = fmt
        self.stream = stream
        self.title = title
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
            console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")))
            for table in rich_tables(cycle.reports, console.width, title=self.title):
                console.print(table)
        else:
            print(to_table(cycle.reports), file=stream)
        health = vantage_line(cycle)
        if health:
            print(health, file=stream)
