"""The lab fixture: one lab for all of tests/lab, built on first use and always torn down.

Without root or the tools, each lab test module skips as a whole at import with one message
(`skip_unless_lab_can_run`), and the rest of the suite runs.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab import netns
from tests.lab.topology import Lab, unavailable


@dataclass
class _LabRun:
    """What the terminal summary reports about this session's lab."""

    start_seconds: float = 0.0
    total_seconds: float | None = None
    leftovers: list[str] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)
    kept_workdir: str | None = None


_run = _LabRun()


def _host_links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


@pytest.fixture(scope="package")
def lab() -> Iterator[Lab]:
    """The running lab; its censor has no scenario applied between tests.

    Package scope: built for the first lab test, torn down after the last test of tests/lab,
    so the wall time measured here is the lab's alone.
    """
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    if threading.current_thread() is threading.main_thread():
        # A SIGTERM (CI cancelling) then unwinds through the teardown below, like Ctrl-C.
        signal.signal(signal.SIGTERM, _terminate)
    links_before = _host_links()
    started = time.monotonic()
    instance = Lab()
    try:
        instance.start()
        _run.start_seconds = time.monotonic() - started
        yield instance
    finally:
        # A failed run keeps its logs and configs for the summary to point at.
        instance.keep_workdir = instance.keep_workdir or bool(_run.failed_tests)
        instance.stop()
        _run.total_seconds = time.monotonic() - started
        _run.kept_workdir = str(instance.workdir) if instance.keep_workdir else None
        _run.leftovers = netns.namespaces(instance.prefix)
        if _host_links() != links_before:
            _run.leftovers.append("a link in the host namespace")
    assert not _run.leftovers, f"the lab left things behind: {_run.leftovers}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def censor(lab: Lab) -> Iterator:
    """The lab's censor, with every scenario removed after the test (pass or fail)."""
    yield lab.censor
    lab.censor.clear()


# Scenarios that make every target at the censored vantage fail for a while (a walled garden,
# a transparent proxy) leave those failures in the rules' 5-minute windows, where the dominant
# failure of a later single-target scenario would count them: they run last.
VANTAGE_WIDE_MODULE = "test_hostile.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    lab_dir = Path(__file__).parent
    wide = [item for item in items if item.path.name == VANTAGE_WIDE_MODULE]
    rest = [item for item in items if item.path.name != VANTAGE_WIDE_MODULE]
    # Right after the other lab tests, so that the package's one lab serves them all.
    in_lab = [i for i, item in enumerate(rest) if item.path.parent == lab_dir]
    at = in_lab[-1] + 1 if in_lab else len(rest)
    items[:] = rest[:at] + wide + rest[at:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("lab"):
        _run.failed_tests.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _run.total_seconds is None:
        return
    left = ", ".join(_run.leftovers) if _run.leftovers else "nothing"
    terminalreporter.write_sep(
        "-",
        f"censorship lab: wall time {_run.total_seconds:.1f}s "
        f"(start {_run.start_seconds:.1f}s); left behind: {left}",
    )
    if _run.kept_workdir:
        terminalreporter.write_line(f"lab logs and configs kept in {_run.kept_workdir}")
