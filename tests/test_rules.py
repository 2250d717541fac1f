"""The Prometheus recording rules and alerts in deploy/prometheus: valid, and doing what they say.

`promtool check rules` validates the rule files; `promtool test rules` runs their unit tests
(reachprobe.rules.test.yml: a blocked, a fine, a dead and a throttled target seen from a test
and a control vantage; reachprobe.alerts.test.yml: every alert, with two test and two control
vantages, a silent pulled agent, a silent pushing agent and one lost cycle). The censorship lab
queries the same rules live.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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


RULE_FILES = ("reachprobe.rules.yml", "reachprobe.prefix.rules.yml", "reachprobe.alerts.yml")
RULE_TESTS = (
    "reachprobe.rules.test.yml",
    "reachprobe.prefix.rules.test.yml",
    "reachprobe.alerts.test.yml",
)


def test_every_rule_file_is_checked_and_tested() -> None:
    on_disk = {p.name for p in RULES_DIR.glob("*.yml")} - {"prometheus.yml"}
    assert on_disk == set(RULE_FILES) | set(RULE_TESTS)


def test_rule_files_are_valid() -> None:
    proc = promtool("check", "rules", *RULE_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((RULES_DIR / "reachprobe.alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load((RULES_DIR / "reachprobe.alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert alerts == tested


def test_rule_unit_tests_pass() -> None:
    proc = promtool("test", "rules", *RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_example_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
