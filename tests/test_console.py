"""The console sink's table for people (rich, on a terminal) and for scripts (plain)."""

from __future__ import annotations

import io
import json
import re

import pytest

from agent.sinks.console import ConsoleSink, live_progress, to_json
from measure.report import CycleReport
from measure.vantage import VantageHealth
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
    assert "what it means" in text
    assert "blocked (TLS)" in text
    assert "tls_reset" in text
    assert "a sign of SNI filtering" in text
    assert "KiB/s" in text
    assert "3/8 targets reachable" in text


def test_plain_when_not_a_terminal(cycle: CycleReport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    text = table(cycle, io.StringIO())
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["TARGET", "VERDICT", "WHY"]
    assert lines[2].split()[:2] == ["messenger", "tls_blocking"]


def test_no_color_takes_only_the_colour_away(
    cycle: CycleReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "400")
    text = table(cycle, Terminal())
    # Bold and italic stay; no foreground colour (SGR 30-38, 90-97) does.
    assert not re.search(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m", text), text
    assert "what it means" in text
    assert "a sign of SNI filtering" in text
    assert "3/8 targets reachable" in text


def test_the_table_title_names_the_command(cycle: CycleReport) -> None:
    stream = Terminal()
    ConsoleSink("table", stream, title="reachprobe demo").publish(cycle)
    assert "reachprobe demo" in stream.getvalue()
    assert "reachprobe check" not in stream.getvalue()


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
