"""How a QUIC step's result is reported beside the chain's verdict: never the verdict itself
(browsers fall back to TCP), but in the JSON's `quic` object and steps, the table's why, and
`reachprobe_probe_*{step="quic"}` (docs/taxonomy.md, "HTTP/3 beside the chain")."""

from __future__ import annotations

from rich.console import Console

from agent.config import parse_config
from agent.planner import make_plan
from agent.sinks.console import rich_tables, to_table
from agent.sinks.prometheus import PrometheusSink
from agent.sinks.status import StatusSink
from measure.report import CycleReport, TargetReport
from measure.verdict import Verdict
from probes.results import QuicFacts, StepResult
from probes.taxonomy import Code, Step

CONFIG = parse_config({"targets": [{"name": "site", "url": "https://site.example/"}]}, "t.yaml")
SITE = make_plan(CONFIG).targets[0]
ADDRESS = "192.0.2.10:443"
FACTS = QuicFacts(alpn="h3", status=200, body_bytes=10, handshake_seconds=0.01)


def _step(step: Step, result: str, detail: str = "") -> StepResult:
    facts = FACTS if step == Step.QUIC and result == "ok" else None
    return StepResult(step, Code(result), ADDRESS, 0.01, detail, facts)


WORKING_CHAIN = (_step(Step.TCP, "ok"), _step(Step.TLS, "ok"), _step(Step.HTTP, "ok"))
RESET_CHAIN = (_step(Step.TCP, "ok"), _step(Step.TLS, "tls_reset"), _step(Step.HTTP, "skipped"))
QUIC_TIMEOUT = _step(Step.QUIC, "quic_timeout", "no answer to the QUIC Initial")


def _report(verdict: Verdict, chain: tuple[StepResult, ...], *quic: StepResult) -> TargetReport:
    dns = StepResult(Step.DNS, Code.OK, None, 0.01)
    return TargetReport(SITE, verdict, dns=dns, chains=(chain,), quic=quic)


def _sample(metrics: PrometheusSink, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"target": "site", **labels})


def test_quic_blocked_beside_a_working_tcp_path_stays_reachable_with_a_note() -> None:
    report = _report(Verdict.REACHABLE, WORKING_CHAIN, QUIC_TIMEOUT)
    out = report.to_json()
    assert out["verdict"] == "reachable"
    quic = out["quic"]
    assert isinstance(quic, dict)
    assert quic["result"] == "quic_timeout"
    assert "HTTP/3 blocked" in quic["note"]
    assert "no answer to the QUIC Initial" in quic["note"]
    assert [s["step"] for s in out["steps"]] == ["dns", "tcp", "tls", "http", "quic"]
    assert out["steps"][-1]["ooni_failure"] == "generic_timeout_error"
    assert report.why() == quic["note"]


def test_quic_blocked_shows_in_the_step_series_while_the_target_is_up() -> None:
    metrics = PrometheusSink()
    metrics.configure(CONFIG, make_plan(CONFIG))
    metrics.observe(_report(Verdict.REACHABLE, WORKING_CHAIN, QUIC_TIMEOUT))
    assert _sample(metrics, "reachprobe_target_up") == 1
    assert _sample(metrics, "reachprobe_target_verdict", verdict="reachable") == 1
    assert _sample(metrics, "reachprobe_probe_success", step="quic") == 0
    assert _sample(metrics, "reachprobe_probe_success", step="http") == 1
    results = "reachprobe_probe_results_total"
    assert _sample(metrics, results, step="quic", result="quic_timeout") == 1
    # Recovery: the next cycle's QUIC step works.
    metrics.observe(_report(Verdict.REACHABLE, WORKING_CHAIN, _step(Step.QUIC, "ok")))
    assert _sample(metrics, "reachprobe_probe_success", step="quic") == 1
    assert _sample(metrics, results, step="quic", result="ok") == 1


def test_one_working_address_makes_quic_work_as_for_the_chains() -> None:
    report = _report(Verdict.REACHABLE, WORKING_CHAIN, QUIC_TIMEOUT, _step(Step.QUIC, "ok"))
    assert report.to_json()["quic"] == {"result": "ok"}
    assert report.why() == ""


def test_quic_working_beside_a_blocked_tcp_path_keeps_the_tcp_verdict() -> None:
    report = _report(Verdict.TLS_BLOCKING, RESET_CHAIN, _step(Step.QUIC, "ok"))
    out = report.to_json()
    assert out["verdict"] == "tls_blocking"
    assert out["quic"]["result"] == "ok"
    assert "HTTP/3 (QUIC) works" in out["quic"]["note"]
    assert report.why().startswith(f"tls {ADDRESS} tls_reset")
    assert "HTTP/3 (QUIC) works" in report.why()


def test_both_blocked_is_the_chain_verdict_without_a_quic_note() -> None:
    report = _report(Verdict.TLS_BLOCKING, RESET_CHAIN, QUIC_TIMEOUT)
    assert report.to_json()["quic"] == {"result": "quic_timeout"}
    assert "HTTP/3" not in report.why()


def test_a_target_without_http3_has_no_quic_object() -> None:
    assert "quic" not in _report(Verdict.REACHABLE, WORKING_CHAIN).to_json()


def test_the_tables_and_the_status_page_show_the_quic_note() -> None:
    report = _report(Verdict.REACHABLE, WORKING_CHAIN, QUIC_TIMEOUT)
    plain = to_table([report])
    assert "reachable" in plain
    assert "HTTP/3 blocked" in plain
    console = Console(width=200, record=True)
    for table in rich_tables([report], 200):
        console.print(table)
    assert "HTTP/3 blocked" in console.export_text()
    sink = StatusSink()
    sink.publish(CycleReport(1, 0.0, 0.1, (report,)))
    assert "HTTP/3 blocked" in sink.render()
