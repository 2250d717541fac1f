"""Every verdict through every sink: a verdict added without its row in some sink's table
fails here, instead of costing a cycle's output on a real network."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from agent.config import AgentSection, Config, MeasurementLogSection, parse_config
from agent.explain import VERDICT_TONES, VERDICT_WORDS, Tone, verdict_words
from agent.planner import make_plan
from agent.sinks import console, status
from agent.sinks.console import rich_table, to_json, to_table
from agent.sinks.measurement_log import MeasurementLogSink, record, sink
from agent.sinks.measurement_log.record import FAILED_OPERATIONS
from agent.sinks.prometheus import PrometheusSink
from agent.sinks.remote_write.snapshot import snapshot_registry
from agent.sinks.remote_write.wire import decode_write_request, encode_write_request
from agent.sinks.status import StatusSink
from measure.plan import ProbePlan, TargetPlan
from measure.report import CycleReport, TargetReport
from measure.vantage import VantageHealth
from measure.verdict import OONI_BLOCKING, STEP_VERDICTS, Verdict
from probes.results import DnsFacts, HttpFacts, StepResult
from probes.taxonomy import Code, Step

ADDRESS = "192.0.2.7:443"
# The code a step fails with when it decides a blocking verdict.
FAILING: dict[Step, Code] = {
    Step.DNS: Code.DNS_NXDOMAIN,
    Step.TCP: Code.TCP_TIMEOUT,
    Step.EXCHANGE: Code.EXCHANGE_TIMEOUT,
    Step.TLS: Code.TLS_RESET,
    Step.HTTP: Code.HTTP_BLOCKPAGE,
}
STEP_OF = {verdict: step for step, verdict in STEP_VERDICTS.items()}


def _config_data() -> dict[str, object]:
    targets: list[dict[str, object]] = []
    for verdict in Verdict:
        if STEP_OF.get(verdict) == Step.EXCHANGE:
            targets.append({"name": verdict.value, "tcp": ADDRESS, "exchange": "mtproto"})
        else:
            targets.append({"name": verdict.value, "url": f"https://{verdict.value}.example/"})
    return {"targets": targets}


def _report(target: TargetPlan, verdict: Verdict) -> TargetReport:
    """Plausible steps for `verdict`: every planned step worked up to the one that decides
    it; a verdict decided by no step (vantage down, inconclusive, one added later) gets a
    TCP timeout."""
    failing = STEP_OF.get(verdict, Step.TCP if verdict != Verdict.REACHABLE else None)
    dns_ok = StepResult(Step.DNS, Code.OK, None, 0.01, facts=DnsFacts("udp", ("192.0.2.7",)))
    page = HttpFacts(status=200, body_bytes=1000, bytes_per_second=2500.0)
    steps: list[StepResult] = []
    for step in target.steps:
        if step == failing:
            steps.append(StepResult(step, FAILING[step], ADDRESS, 0.5, detail="failed"))
            break
        if step == Step.DNS:
            steps.append(dns_ok)
        else:
            facts = page if step == Step.HTTP else None
            steps.append(StepResult(step, Code.OK, ADDRESS, 0.02, facts=facts))
    dns = steps[0] if steps and steps[0].step == Step.DNS else None
    chain = tuple(steps[1:] if dns is not None else steps)
    return TargetReport(target, verdict, dns=dns, chains=(chain,) if chain else ())


def every_verdict_cycle() -> tuple[Config, ProbePlan, CycleReport]:
    """A config with one target per verdict and a cycle giving each target its verdict."""
    config = parse_config(_config_data(), "every.yaml")
    plan = make_plan(config)
    reports = [_report(t, Verdict(t.name)) for t in plan.targets]
    return config, plan, CycleReport(1, 1_700_000_000.0, 5.0, reports, VantageHealth())


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        (OONI_BLOCKING, Verdict),
        (VERDICT_WORDS, Verdict),
        (VERDICT_TONES, Verdict),
        (status.SYMBOLS, Tone),
        (console.STYLES, Tone),
        (FAILED_OPERATIONS, Step),
    ],
    ids=["ooni-blocking", "words", "tones", "page-symbols", "table-styles", "ooni-operations"],
)
def test_every_table_has_a_row_for_every_key(table: dict[Any, Any], keys: type) -> None:
    assert set(table) == set(keys)


def test_only_blocking_verdicts_look_blocked() -> None:
    blocked = {v for v, tone in VERDICT_TONES.items() if tone == Tone.BLOCKED}
    assert blocked == set(STEP_VERDICTS.values())
    assert {v for v, b in OONI_BLOCKING.items() if b is None} == {
        Verdict.VANTAGE_DOWN,
        Verdict.INCONCLUSIVE,
    }


def test_the_fixture_gives_every_verdict() -> None:
    *_, cycle = every_verdict_cycle()
    assert [r.verdict for r in cycle.reports] == list(Verdict)


def test_prometheus_and_remote_write_carry_every_verdict() -> None:
    config, plan, cycle = every_verdict_cycle()
    sink = PrometheusSink()
    sink.configure(config, plan)
    sink.publish(cycle)
    exposition = generate_latest(sink.registry).decode()
    for verdict in Verdict:
        line = f'reachprobe_target_verdict{{target="{verdict}",verdict="{verdict}"}} 1.0'
        assert line in exposition
    snapshot = snapshot_registry(sink.registry, {"job": "j", "instance": "i"}, 1.7e9)
    series = decode_write_request(encode_write_request([snapshot]))
    current = {
        labels["target"]
        for labels, points in ((dict(k), v) for k, v in series.items())
        if labels["__name__"] == "reachprobe_target_verdict"
        and labels["verdict"] == labels["target"]
        and points[0][1] == 1.0
    }
    assert current == {v.value for v in Verdict}


def test_the_console_json_and_tables_carry_every_verdict() -> None:
    config, _, cycle = every_verdict_cycle()
    document = json.loads(to_json(config.agent, cycle))
    assert [t["verdict"] for t in document["targets"]] == [v.value for v in Verdict]
    table = to_table(cycle.reports)
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:] if line}
    for verdict in Verdict:
        assert rows[verdict.value] == verdict.value
    out = io.StringIO()
    Console(file=out, width=200).print(rich_table(cycle.reports))
    for verdict in Verdict:
        assert verdict_words(verdict) in out.getvalue()


def test_the_status_page_carries_every_verdict() -> None:
    config, plan, cycle = every_verdict_cycle()
    sink = StatusSink()
    sink.configure(config, plan)
    sink.publish(cycle)
    page = sink.render()
    for verdict in Verdict:
        tone = VERDICT_TONES[verdict]
        shown = f"<span aria-hidden=true>{status.SYMBOLS[tone]}</span> {verdict_words(verdict)}"
        assert f"<span class='verdict {tone}'>{shown}</span>" in page


async def test_the_measurement_log_writes_a_line_for_every_verdict(tmp_path: Path) -> None:
    config, plan, cycle = every_verdict_cycle()
    path = tmp_path / "m.jsonl"
    config = config.model_copy(update={"measurement_log": _log_section(path)})
    sink = MeasurementLogSink()
    sink.configure(config, plan)
    sink.publish(cycle)
    await sink.aclose()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["test_keys"]["verdict"] for r in records] == [v.value for v in Verdict]


def _log_section(path: Path) -> MeasurementLogSection | None:
    return parse_config({"measurement_log": {"path": str(path)}}, "m.yaml").measurement_log


async def test_one_record_that_cannot_be_built_costs_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config, plan, cycle = every_verdict_cycle()
    path = tmp_path / "m.jsonl"
    config = config.model_copy(update={"measurement_log": _log_section(path)})

    def broken(
        agent: AgentSection, cycle: CycleReport, report: TargetReport, token: str
    ) -> dict[str, Any]:
        if report.verdict == Verdict.TLS_BLOCKING:
            raise KeyError(report.verdict)
        return record(agent, cycle, report, token)

    monkeypatch.setattr(sink, "record", broken)
    logs = MeasurementLogSink()
    logs.configure(config, plan)
    with caplog.at_level(logging.ERROR, logger="reachprobe"):
        logs.publish(cycle)
        logs.publish(cycle)
        await logs.aclose()
    written = [json.loads(line)["test_keys"]["verdict"] for line in path.read_text().splitlines()]
    others = [v.value for v in Verdict if v != Verdict.TLS_BLOCKING]
    assert written == others * 2
    # Said once, naming the target, not once per cycle.
    assert [r.getMessage() for r in caplog.records] == [
        "measurement log: no record for target tls_blocking"
    ]
