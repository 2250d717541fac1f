"""Turns target reports into the Prometheus series of DESIGN.md (prefix `reachprobe_`).

Label values stay bounded: `target` is the configured name, `step`, `result` and `verdict`
come from fixed sets, and no address ever becomes a label value.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from agent import __version__
from agent.chain import TargetReport
from agent.config import Config
from agent.verdict import REACHABLE, VERDICTS
from probes.taxonomy import SKIPPED, Step

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CYCLE_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The agent's registry and the series it exports."""

    def __init__(self) -> None:
        # `_created` series add one series per labelled counter and histogram and tell
        # nothing the rules use. The switch is process-wide; the agent has one registry.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.results = Counter(
            "reachprobe_probe_results", "Step runs by result code.",
            ["target", "step", "result"], registry=r,
        )  # fmt: skip
        self.success = Gauge(
            "reachprobe_probe_success", "1 if the last run of the step succeeded.",
            ["target", "step"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "reachprobe_probe_duration_seconds", "Duration of step runs.",
            ["step"], buckets=STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self.last_duration = Gauge(
            "reachprobe_probe_last_duration_seconds", "Duration of the last run of the step.",
            ["target", "step"], registry=r,
        )  # fmt: skip
        self.up = Gauge(
            "reachprobe_target_up", "1 if the whole chain worked on the last cycle.",
            ["target"], registry=r,
        )  # fmt: skip
        self.verdict = Gauge(
            "reachprobe_target_verdict", "The target's local verdict (a state set).",
            ["target", "verdict"], registry=r,
        )  # fmt: skip
        self.addresses = Gauge(
            "reachprobe_target_addresses", "Addresses the resolver returned on the last cycle.",
            ["target", "resolver"], registry=r,
        )  # fmt: skip
        self.info = Gauge(
            "reachprobe_target_info", "The target's configuration.",
            ["target", "host", "port", "scheme", "group"], registry=r,
        )  # fmt: skip
        self.throughput = Gauge(
            "reachprobe_http_throughput_bytes_per_second",
            "Body bytes per second of the last HTTP step (for throttling rules).",
            ["target"], registry=r,
        )  # fmt: skip
        self.agent_info = Gauge(
            "reachprobe_agent_info", "The vantage point this agent speaks for.",
            ["vantage", "role", "country", "asn", "version"], registry=r,
        )  # fmt: skip
        self.cycle_duration = Histogram(
            "reachprobe_cycle_duration_seconds", "Duration of a whole probing cycle.",
            buckets=CYCLE_BUCKETS, registry=r,
        )  # fmt: skip
        self.last_cycle = Gauge(
            "reachprobe_last_cycle_timestamp_seconds", "When the last cycle finished.",
            registry=r,
        )  # fmt: skip
        self.config_reloads = Counter(
            "reachprobe_config_reloads", "Config reloads by outcome.", ["outcome"], registry=r
        )
        # What each target has put into the registry, so that a reload can take it out again.
        self._series: dict[str, set[tuple[Gauge | Counter, tuple[str, ...]]]] = defaultdict(set)

    def _labels(self, metric: Gauge | Counter, target: str, *rest: str) -> Gauge | Counter:
        labels = (target, *rest)
        self._series[target].add((metric, labels))
        return metric.labels(*labels)

    def configure(self, config: Config) -> None:
        """Set the identity and target info series, forgetting targets no longer configured."""
        self.agent_info.clear()
        a = config.agent
        self.agent_info.labels(a.vantage, a.role, a.country, a.asn, __version__).set(1)
        names = {t.name for t in config.targets}
        for name in list(self._series):
            if name not in names:
                self.forget(name)
        self.info.clear()  # a reload may change a target's host or port
        for t in config.targets:
            self.info.labels(t.name, t.hostname, str(t.portnumber), t.scheme, t.group).set(1)

    def forget(self, target: str) -> None:
        """Remove every series of a target."""
        for metric, labels in self._series.pop(target, set()):
            with contextlib.suppress(KeyError):  # already gone with a clear()
                metric.remove(*labels)

    def observe(self, report: TargetReport) -> None:
        """Record one target's cycle."""
        name = report.target.name
        steps = report.steps
        for step in steps:
            if step.result == SKIPPED:
                continue
            self._labels(self.results, name, step.step.value, step.result).inc()
            self.duration.labels(step.step.value).observe(step.duration_seconds)
        chosen = report.deciding_steps
        for step in Step:
            ran = [s for s in steps if s.step == step]
            if not ran:
                continue
            ok = any(s.ok for s in ran)
            self._labels(self.success, name, step.value).set(1 if ok else 0)
            shown = next((s for s in chosen if s.step == step), ran[0])
            self._set_or_drop(
                self.last_duration, (name, step.value),
                None if shown.result == SKIPPED else shown.duration_seconds,
            )  # fmt: skip
        self._labels(self.up, name).set(1 if report.verdict == REACHABLE else 0)
        for verdict in VERDICTS:
            self._labels(self.verdict, name, verdict).set(1 if verdict == report.verdict else 0)
        for resolver, count in report.addresses.items():
            self._labels(self.addresses, name, resolver).set(count)
        http = next((s for s in chosen if s.step == Step.HTTP and s.ok), None)
        rate = http.data.get("bytes_per_second") if http is not None else None
        self._set_or_drop(self.throughput, (name,), float(rate) if rate is not None else None)  # type: ignore[arg-type]

    def _set_or_drop(self, gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
        """Set a "last run" gauge, or remove it when this cycle has no value: a stale figure
        from an earlier cycle would read as current."""
        if value is not None:
            self._labels(gauge, *labels).set(value)
        else:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def cycle_done(self, duration: float, finished_at: float) -> None:
        """Record a finished cycle."""
        self.cycle_duration.observe(duration)
        self.last_cycle.set(finished_at)
