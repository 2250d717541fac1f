"""The Prometheus recording rules in deploy/prometheus: valid, and doing what they say.

`promtool check rules` validates the rule file; `promtool test rules` runs its unit tests
(reachprobe.rules.test.yml: a blocked, a fine, a dead and a throttled target seen from a test
and a control vantage). The censorship lab queries the same rules live.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the rules directory (rule_files paths are relative to the test file)."""
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )


def test_rule_files_are_valid() -> None:
    rule_files = sorted(p.name for p in RULES_DIR.glob("*.rules.yml"))
    assert rule_files, f"no *.rules.yml in {RULES_DIR}"
    proc = promtool("check", "rules", *rule_files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(p.name for p in RULES_DIR.glob("*.rules.test.yml"))
    assert tests, f"no *.rules.test.yml in {RULES_DIR}"
    proc = promtool("test", "rules", *tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_example_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
