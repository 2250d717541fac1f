"""The console sink's table for people (rich, on a terminal) and for scripts (plain)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.explain import explain
from agent.sinks.console import ROWS_PER_TABLE, ConsoleSink, live_progress, rich_tables, to_json
from measure.report import CycleReport
from measure.vantage import VantageHealth
from measure.verdict import first_failure
from tests.demo_world import cycle_of, demo_agent
from tests.metric_reports import CONFIG, cycles


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> CycleReport:
    import asyncio

    async def one() -> CycleReport:
        async with demo_agent(tmp_path_factory.mktemp("demo")) as (_, prober):
            return await cycle_of(prober)

    return asyncio.run(one())


def table(cycle: CycleReport, stream: io.StringIO) -> str:
    ConsoleSink("table", stream).publish(cycle)
    return stream.getvalue()


def test_on_a_terminal_the_table_has_colour_explanations_and_timings(
    cycle: CycleReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # wide enough not to wrap
    text = table(cycle, Terminal())
    assert "\x1b[" in text, "no colour"
    assert "what happened" in text
    assert "blocked (TLS)" in text
    assert "tls_reset" in text
    assert "a sign of SNI filtering" in text
    assert "KiB/s" in text
    assert "3/8 targets reachable" in text


@pytest.mark.parametrize("no_color", [None, "1"])
def test_plain_when_not_a_terminal_or_no_color(
    cycle: CycleReport, monkeypatch: pytest.MonkeyPatch, no_color: str | None
) -> None:
    stream: io.StringIO = io.StringIO()
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
        stream = Terminal()
    text = table(cycle, stream)
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["TARGET", "VERDICT", "WHY"]
    assert lines[2].split()[:2] == ["messenger", "tls_blocking"]


def test_live_progress_only_on_a_terminal(cycle: CycleReport) -> None:
    with live_progress(len(cycle.reports), io.StringIO()) as show:
        assert show is None
    screen = Terminal()
    with live_progress(len(cycle.reports), screen) as show:
        assert show is not None
        for report in cycle.reports:
            show(report)
    assert "8/8" in screen.getvalue()


def test_the_json_document_written_in_pieces_is_json_dumps_own() -> None:
    """One target at a time, the document is still byte for byte `json.dumps(doc, indent=2)`."""
    empty = CycleReport(3, 0.0, 1.0, (), VantageHealth())
    for cycle in [*cycles(), empty]:
        text = to_json(CONFIG.agent, cycle)
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        assert len(json.loads(text)["targets"]) == len(cycle.reports)


REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(*args: str, columns: int) -> str:
    """The CLI's output on a pseudo-terminal `columns` wide, escape sequences removed."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=REPO,
    )  # fmt: skip
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=60) == 0
    return ANSI.sub("", b"".join(chunks).decode())


def test_the_demo_table_fits_80_columns_without_splitting_words() -> None:
    from rich.cells import cell_len

    screen = on_a_terminal("demo", "--once", columns=80)
    # The progress display draws over itself with carriage returns; the table follows it.
    table = screen[screen.index("target ") :].replace("\r\n", "\n")
    lines = table.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    assert len(lines) <= 40, "the 8 demo targets take too many lines"
    # Wrapped only where there were spaces: each explanation reads whole once the lines are
    # joined (the other cells of a row are one line each), and the codes are unbroken.
    joined = " ".join(table.split())
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "agent", "demo", "--once", "--format", "json"],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
        ).stdout
    )  # fmt: skip
    for target in doc["targets"]:
        failing = [s for s in target["steps"] if s["result"] not in ("ok", "skipped")]
        if failing:
            code = failing[0]["result"]
            name = target["name"]
            assert re.search(rf"\b{code}: ", joined), code
            words = explain(code, "HOST").split("HOST")
            assert all(" ".join(w.split()) in joined for w in words), (name, code)
    # The throttled download shows for what it is, its rate in words.
    assert re.search(r"video ✓ reachable slow: the page came at \d+ KiB/s \(about", joined)
    assert "times slower than the other downloads here" in joined


def test_a_long_table_is_drawn_a_piece_at_a_time(cycle: CycleReport) -> None:
    reports = list(cycle.reports) * 40  # 320 rows
    pieces = list(rich_tables(reports, 80))
    assert len(pieces) == -(-len(reports) // ROWS_PER_TABLE)
    assert [p.show_header for p in pieces] == [True] + [False] * (len(pieces) - 1)
    assert [p.caption is not None for p in pieces] == [False] * (len(pieces) - 1) + [True]
    widths = {tuple(c.width for c in p.columns) for p in pieces}
    assert len(widths) == 1, "the pieces' columns differ"


def test_the_cells_say_what_failed(cycle: CycleReport) -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    for piece in rich_tables(cycle.reports, 200):
        console.print(piece)
    text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    for report in cycle.reports:
        failure = first_failure(report.deciding_steps)
        if failure is not None:
            assert f"{failure.result.value}: {explain(failure.result, report.target.host)}" in text
