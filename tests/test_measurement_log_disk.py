"""The measurement log on a failing disk (issue 26): a torn last line is moved aside at open,
a full disk (a real 256 KiB tmpfs, as root) or a removed directory costs only the records
that could not be written, counted by reason and said once each way, and writing resumes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.config import parse_config
from agent.sinks.measurement_log import MeasurementLogSink
from agent.sinks.measurement_log.logfile import TORN_SUFFIX, LogFile
from tests.metric_reports import CONFIG, PLAN, cycles

TMPFS_BYTES = 256 * 1024
DEADLINE = 10.0
FAILURES = "reachprobe_measurement_log_write_failures_total"


class Counted:
    """Records the `failed(reason)` calls of a LogFile."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_torn_last_line_is_moved_aside_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.jsonl"
    fragment = b'{"schema":"reachprobe-measurement/2","test_keys":{"tar'
    path.write_bytes(b'{"n":1}\n{"n":2}\n' + fragment)
    logfile = LogFile(path, 1 << 20, 1, Counted())
    with caplog.at_level(logging.WARNING, logger="reachprobe"):
        logfile.append(['{"n":3}'])
        logfile.close()
        LogFile(path, 1 << 20, 1, Counted()).append(['{"n":4}'])
    # Every line is a whole record; the fragment is kept, one line of its own, beside.
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
    assert (tmp_path / f"m.jsonl{TORN_SUFFIX}").read_bytes() == fragment + b"\n"
    [said] = warnings_of(caplog)
    assert f"{path} ended in a torn record ({len(fragment)} bytes" in said


def test_a_file_without_any_newline_is_moved_aside_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"x" * 100_000)  # longer than one read back from the end
    LogFile(path, 1 << 20, 1, Counted()).append(['{"n":1}'])
    assert path.read_bytes() == b'{"n":1}\n'
    assert (tmp_path / f"m.jsonl{TORN_SUFFIX}").stat().st_size == 100_001


def test_a_removed_directory_is_counted_said_once_and_writing_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "m.jsonl"
    counted = Counted()
    logfile = LogFile(path, 1 << 20, 1, counted)
    with caplog.at_level(logging.WARNING, logger="reachprobe"):
        logfile.append(['{"n":1}'])
        shutil.rmtree(directory)
        # Without the check on the path these would go into the unlinked file, unseen.
        logfile.append(['{"n":2}', '{"n":3}'])
        logfile.append(['{"n":4}'])
        assert counted.reasons == ["no_directory"] * 3
        directory.mkdir()
        logfile.append(['{"n":5}', '{"n":6}'])
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [5, 6]
    start, stop = warnings_of(caplog)
    assert f"cannot write {path} (no_directory" in start
    assert f"writing {path} again; 3 records were not written (no_directory)" in stop


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a 256 KiB tmpfs, which needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_a_full_disk_costs_only_what_did_not_fit_and_writing_resumes(
    small_disk: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = small_disk / "m.jsonl"
    config = CONFIG.model_copy(
        update={
            "measurement_log": parse_config(
                {"measurement_log": {"path": str(path), "max_bytes": 1 << 20}}, "m.yaml"
            ).measurement_log
        }
    )
    registry = CollectorRegistry()
    sink = MeasurementLogSink(registry)
    sink.configure(config, PLAN)
    cycle = cycles()[1]
    # Most of the disk taken by something else; the log fills the rest.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (TMPFS_BYTES - 16 * 1024))
    with caplog.at_level(logging.INFO, logger="reachprobe"):
        for _ in range(40):
            sink.publish(cycle)
        assert await sink.written(DEADLINE)
        lost = registry.get_sample_value(FAILURES, {"reason": "no_space"})
        assert lost is not None
        assert lost > 0
        # Every line that is there is whole: a record the disk had no room for was cut off.
        kept = path.read_text().splitlines()
        assert all(json.loads(line) for line in kept)
        assert len(kept) + lost == 40 * len(cycle.reports)
        filler.unlink()  # space returns
        sink.publish(cycle)
        assert await sink.written(DEADLINE)
    assert len(path.read_text().splitlines()) == len(kept) + len(cycle.reports)
    assert registry.get_sample_value(FAILURES, {"reason": "no_space"}) == lost
    await sink.aclose()
    # One line when the failures start, one when they stop; no traceback, not per record.
    start, stop = warnings_of(caplog)
    assert f"cannot write {path} (no_space" in start
    assert f"writing {path} again; {lost:.0f} records were not written (no_space)" in stop
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
