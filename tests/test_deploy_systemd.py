"""The shipped systemd unit is valid and as confined as systemd can tell (systemd-analyze)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "systemd" / "reachprobe.service"
ANALYZE = shutil.which("systemd-analyze")
INSTALLED = "/opt/reachprobe/bin/reachprobe"
# systemd-analyze's exposure scale runs from 0 (confined) to 10; 2 is "OK".
MAX_EXPOSURE = 2.0


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_runs_unprivileged_without_capabilities() -> None:
    section = service()
    assert section["DynamicUser"] == "yes"
    assert section["CapabilityBoundingSet"] == ""
    assert section["AmbientCapabilities"] == ""
    assert section["ExecStart"] == f"{INSTALLED} run --config /etc/reachprobe/agent.yaml"


@pytest.fixture
def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's agent (verify wants it to exist)."""
    agent = Path(sys.executable).with_name("reachprobe")
    if not agent.exists():
        pytest.skip("the reachprobe script is not installed next to this Python")
    unit = tmp_path / "reachprobe.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(agent)))
    return unit


@pytest.mark.skipif(ANALYZE is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit_and_rates_it_confined(local_unit: Path) -> None:
    assert ANALYZE is not None
    verify = subprocess.run(
        [ANALYZE, "verify", str(local_unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == ""
    security = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(local_unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert level, security.stdout[-500:] + security.stderr
    assert float(level[1]) <= MAX_EXPOSURE
