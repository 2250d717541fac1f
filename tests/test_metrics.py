"""Metric bookkeeping across cycles: no stale "last run" figures, forgotten targets vanish."""

from __future__ import annotations

from agent.chain import TargetReport
from agent.config import parse_config
from agent.metrics import Metrics
from probes.results import StepResult
from probes.taxonomy import Step

CONFIG = parse_config(
    {"targets": [{"name": "site", "url": "https://site.example/"},
                 {"name": "other", "tcp": "192.0.2.1:443"}]},
    "t.yaml",
)  # fmt: skip
SITE = CONFIG.targets[0]


def report(verdict: str, *steps: tuple[Step, str, float]) -> TargetReport:
    results = [StepResult(s, r, None, d, data={"bytes_per_second": 1000.0}) for s, r, d in steps]
    return TargetReport(SITE, verdict, dns=results[:1], chains=[results[1:]])


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_step_that_stops_running_loses_its_last_duration_and_throughput() -> None:
    metrics = Metrics()
    metrics.configure(CONFIG)
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


def test_reconfiguring_forgets_removed_targets_and_no_created_series() -> None:
    metrics = Metrics()
    metrics.configure(CONFIG)
    metrics.observe(report("reachable", (Step.DNS, "ok", 0.01), (Step.TCP, "ok", 0.02)))
    metrics.configure(parse_config({"targets": [{"name": "other", "tcp": "192.0.2.1:443"}]}, "t"))
    targets = {
        s.labels.get("target") for family in metrics.registry.collect() for s in family.samples
    }
    assert "site" not in targets
    assert "other" in targets
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert not any(n.endswith("_created") for n in names)
