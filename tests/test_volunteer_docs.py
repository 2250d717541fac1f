"""The volunteer's documents keep up with the code: the README's first commands, the
measurement log schema, and the files docs/volunteers.md tells people to copy."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import AgentSection, parse_config
from agent.planner import make_plan
from agent.sinks.measurement_log import record
from measure.plan import TargetPlan
from measure.report import CycleReport, TargetReport
from measure.verdict import Verdict
from probes.results import DnsFacts, StepResult
from probes.taxonomy import Code, Step

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_starts_with_install_and_demo_then_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    assert [b.strip() for b in blocks[:2]] == ["pip install . && reachprobe demo", "make test"]


def test_the_measurement_log_doc_names_every_field() -> None:
    doc = (ROOT / "docs" / "measurement-log.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_.\[\]]+)`", doc))
    dns = StepResult(Step.DNS, Code.OK, None, 0.1, "", DnsFacts("udp", ("192.0.2.1",)))
    control = StepResult(Step.DNS, Code.OK, None, 0.1, "", DnsFacts("doh", ("192.0.2.1",)))
    tcp = TargetPlan(name="t", group="", scheme="tcp", host="192.0.2.1", port=443)
    url = make_plan(
        parse_config({"targets": [{"name": "a", "url": "https://a.example/"}]}, "t.yaml")
    )
    reports = [
        TargetReport(tcp, Verdict.INCONCLUSIVE, dns=dns, error="internal error: x"),
        TargetReport(url.targets[0], Verdict.REACHABLE, dns=dns, control=control),
    ]
    for report in reports:
        rec = record(AgentSection(), CycleReport(1, 0.0, 0.1, (report,)), report)
        for key in rec:
            assert key in documented, key
        for key in rec["test_keys"]:
            assert f"test_keys.{key}" in documented or f"test_keys.{key}[]" in documented, key
        assert "duration_seconds" in rec["test_keys"]["queries"][0]


def test_the_files_the_volunteer_guide_names_exist() -> None:
    guide = (ROOT / "docs" / "volunteers.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?:deploy|config|docs)/[\w./-]+\w", guide))
    assert "deploy/systemd/reachprobe.service" in named
    for path in named:
        assert (ROOT / path).exists(), path
