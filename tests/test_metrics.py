"""Metric bookkeeping across cycles: no stale "last run" figures, forgotten targets vanish."""

from __future__ import annotations

from agent.config import parse_config
from agent.planner import make_plan
from agent.sinks.prometheus import PrometheusSink
from measure.report import TargetReport
from measure.verdict import Verdict
from probes.results import HttpFacts, StepResult
from probes.taxonomy import Code, Step

CONFIG = parse_config(
    {"targets": [{"name": "site", "url": "https://site.example/"},
                 {"name": "other", "tcp": "192.0.2.1:443"}]},
    "t.yaml",
)  # fmt: skip
PLAN = make_plan(CONFIG)
SITE = PLAN.targets[0]


def report(verdict: str, *steps: tuple[Step, str, float]) -> TargetReport:
    facts = HttpFacts(status=200, body_bytes=1000, bytes_per_second=1000.0)
    results = [
        StepResult(s, Code(r), None, d, facts=facts if s == Step.HTTP else None)
        for s, r, d in steps
    ]
    return TargetReport(SITE, Verdict(verdict), dns=results[0], chains=(tuple(results[1:]),))


def sample(metrics: PrometheusSink, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_step_that_stops_running_loses_its_last_duration_and_throughput() -> None:
    metrics = PrometheusSink()
    metrics.configure(CONFIG, PLAN)
    metrics.observe(report("reachable", (Step.DNS, "ok", 0.01), (Step.TCP, "ok", 0.02),
                           (Step.TLS, "ok", 0.03), (Step.HTTP, "ok", 0.04)))  # fmt: skip
    last = "reachprobe_probe_last_duration_seconds"
    assert sample(metrics, last, target="site", step="http") == 0.04
    assert sample(metrics, "reachprobe_http_throughput_bytes_per_second", target="site") == 1000
    metrics.observe(report("tcp_ip_blocking", (Step.DNS, "ok", 0.01), (Step.TCP, "tcp_timeout", 5),
                           (Step.TLS, "skipped", 0), (Step.HTTP, "skipped", 0)))  # fmt: skip
    assert sample(metrics, last, target="site", step="tcp") == 5
    assert sample(metrics, last, target="site", step="http") is None
    assert sample(metrics, "reachprobe_http_throughput_bytes_per_second", target="site") is None
    assert sample(metrics, "reachprobe_probe_success", target="site", step="http") == 0
    assert sample(metrics, "reachprobe_target_verdict", target="site", verdict="reachable") == 0
    assert sample(metrics, "reachprobe_probe_results_total", target="site", step="tcp",
                  result="tcp_timeout") == 1  # fmt: skip


def test_a_page_still_arriving_at_the_deadline_keeps_its_throughput_gauge() -> None:
    """Issue 22: a throttled page seldom completes; its rate is what the throttling rule
    compares, so an `http_slow` step exports it as a successful one does."""
    metrics = PrometheusSink()
    metrics.configure(CONFIG, PLAN)
    metrics.observe(report("inconclusive", (Step.DNS, "ok", 0.01), (Step.TCP, "ok", 0.02),
                           (Step.TLS, "ok", 0.03), (Step.HTTP, "http_slow", 4.5)))  # fmt: skip
    assert sample(metrics, "reachprobe_http_throughput_bytes_per_second", target="site") == 1000
    assert sample(metrics, "reachprobe_probe_success", target="site", step="http") == 0


def test_reconfiguring_forgets_removed_targets_and_no_created_series() -> None:
    metrics = PrometheusSink()
    metrics.configure(CONFIG, PLAN)
    metrics.observe(report("reachable", (Step.DNS, "ok", 0.01), (Step.TCP, "ok", 0.02)))
    other = parse_config({"targets": [{"name": "other", "tcp": "192.0.2.1:443"}]}, "t")
    metrics.configure(other, make_plan(other))
    targets = {
        s.labels.get("target") for family in metrics.registry.collect() for s in family.samples
    }
    assert "site" not in targets
    assert "other" in targets
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert not any(n.endswith("_created") for n in names)
