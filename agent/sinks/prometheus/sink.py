"""The Prometheus sink: turns cycle reports into the `reachprobe_` series (README's metrics
reference).

Label values stay bounded: `target` is the configured name, `step`, `result` and `verdict`
come from fixed sets, and no address ever becomes a label value.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from agent import __version__
from agent.config import Config
from agent.sinks import Sink
from agent.sinks.prometheus.raw import RawMetrics
from agent.sinks.prometheus.target_series import TargetSeries
from measure.followups.raw import RawEvidence
from measure.plan import ProbePlan
from measure.report import CycleReport, PrefixResult, TargetReport
from probes.results import DnsFacts
from probes.taxonomy import SKIPPED

# Raw evidence keys that are injection fingerprints, and the `kind` label each counts as.
FINGERPRINTS = {"injection": "rst", "dns_injection": "dns"}
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CYCLE_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class PrometheusSink(Sink):
    """The agent's registry and the series it exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` series add one series per labelled counter and histogram and tell
        # nothing the rules use. The switch is process-wide; the agent has one registry.
        disable_created_metrics()
        # The agent's registry (the CLI's, shared with the sinks that read it), or a new one.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.targets = TargetSeries()
        r.register(self.targets)
        self.duration = Histogram(
            "reachprobe_probe_duration_seconds", "Duration of step runs.",
            ["step"], buckets=STEP_BUCKETS, registry=r,
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
        self.resolver_results = Counter(
            "reachprobe_resolver_results",
            "DNS lookups of targets by resolver (test, control) and result code: a failing "
            "control resolver is named here, not hidden.",
            ["resolver", "result"], registry=r,
        )  # fmt: skip
        self.stray_responses = Counter(
            "reachprobe_dns_stray_responses",
            "Datagrams answering another query (a wrong id or question): forged, ignored.",
            ["resolver"], registry=r,
        )  # fmt: skip
        self.connectivity_up = Gauge(
            "reachprobe_vantage_connectivity_up",
            "1 if at least one canary target worked on the last cycle (absent without canaries).",
            registry=r,
        )  # fmt: skip
        self.tcp_intercepted = Gauge(
            "reachprobe_vantage_tcp_intercepted",
            "1 if a connection to the never-answering address succeeded: a middlebox accepts "
            "every TCP connection (absent when the check is off).",
            registry=r,
        )  # fmt: skip
        self.nxdomain_hijacked = Gauge(
            "reachprobe_vantage_nxdomain_hijacked",
            "1 if the resolver answered a name that cannot exist (absent when unknown).",
            ["resolver"], registry=r,
        )  # fmt: skip
        self.prefix_probes = Counter(
            "reachprobe_prefix_probes", "Sampled prefix addresses by TCP result.",
            ["prefix", "result"], registry=r,
        )  # fmt: skip
        self.prefix_ratio = Gauge(
            "reachprobe_prefix_reachable_ratio",
            "Share of the last cycle's sample of the prefix that accepted a TCP connection.",
            ["prefix"], registry=r,
        )  # fmt: skip
        self.prefix_low = Gauge(
            "reachprobe_prefix_ratio_ci_low", "Lower bound of the ratio's 95% Wilson interval.",
            ["prefix"], registry=r,
        )  # fmt: skip
        self.prefix_high = Gauge(
            "reachprobe_prefix_ratio_ci_high", "Upper bound of the ratio's 95% Wilson interval.",
            ["prefix"], registry=r,
        )  # fmt: skip
        self.prefix_sampled = Gauge(
            "reachprobe_prefix_sampled", "Addresses sampled from the prefix in the last cycle.",
            ["prefix"], registry=r,
        )  # fmt: skip
        self.cycles_late = Counter(
            "reachprobe_cycles_late", "Cycles that started late (a cycle outran the interval).",
            registry=r,
        )  # fmt: skip
        self.cycles_skipped = Counter(
            "reachprobe_cycles_skipped", "Whole intervals that passed without a cycle starting.",
            registry=r,
        )  # fmt: skip
        self.cycle_lateness = Gauge(
            "reachprobe_cycle_start_lateness_seconds",
            "How late the last cycle started after its slot.", registry=r,
        )  # fmt: skip
        self.config_reloads = Counter(
            "reachprobe_config_reloads", "Config reloads by outcome.", ["outcome"], registry=r
        )
        self.reload_ok = Gauge(
            "reachprobe_config_last_reload_successful",
            "0 if the last config reload failed (the old config is kept), else 1.", registry=r,
        )  # fmt: skip
        self.reload_time = Gauge(
            "reachprobe_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (start or reload).", registry=r,
        )  # fmt: skip
        self.reload_ok.set(1)
        self.reload_time.set_to_current_time()
        self.raw = RawMetrics(r)

    def configure(self, config: Config, plan: ProbePlan) -> None:
        """Set the identity and target info series, forgetting targets no longer configured."""
        self.agent_info.clear()
        a = config.agent
        self.agent_info.labels(a.vantage, a.role, a.country, a.asn, __version__).set(1)
        for name in self.targets.configure(plan.targets):
            self.raw.forget_trace(name)
        for gauge in (self.prefix_ratio, self.prefix_low, self.prefix_high, self.prefix_sampled):
            gauge.clear()  # set again by the next cycle, for the prefixes still configured

    def reloaded(self, ok: bool, at: float) -> None:
        """Count a reload and keep the last-reload gauges Prometheus' own alerts use."""
        self.config_reloads.labels("success" if ok else "failure").inc()
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(at)

    def publish(self, cycle: CycleReport) -> None:
        """Record a finished cycle: every target's report, then the cycle's own series."""
        for report in cycle.reports:
            self.observe(report)
        for prefix in cycle.prefixes:
            self.observe_prefix(prefix)
        health = cycle.vantage
        self._flag(self.connectivity_up, health.connectivity_up)
        self._flag(self.tcp_intercepted, health.tcp_intercepted)
        self._flag(self.nxdomain_hijacked.labels("test"), health.nxdomain_hijacked)
        self.cycle_duration.observe(cycle.duration_seconds)
        self.cycle_lateness.set(cycle.lateness_seconds)
        if cycle.late:
            self.cycles_late.inc()
        self.cycles_skipped.inc(cycle.skipped_intervals)
        self.last_cycle.set(cycle.started_at + cycle.duration_seconds)

    def observe_prefix(self, prefix: PrefixResult) -> None:
        """Record one prefix's sample of the cycle."""
        name = prefix.name
        for result, count in prefix.results.items():
            self.prefix_probes.labels(name, result).inc(count)
        self.prefix_ratio.labels(name).set(prefix.ratio)
        self.prefix_low.labels(name).set(prefix.ci_low)
        self.prefix_high.labels(name).set(prefix.ci_high)
        self.prefix_sampled.labels(name).set(prefix.sampled)

    @staticmethod
    def _flag(gauge: Gauge, value: bool | None) -> None:
        """A 0/1 health gauge; an unknown value (check off, or it said nothing) reads NaN
        rather than a stale figure from an earlier cycle."""
        gauge.set(float("nan") if value is None else float(value))

    def observe(self, report: TargetReport) -> None:
        """Record one target's cycle."""
        self.targets.observe(report)
        for step in report.steps:
            if step.result != SKIPPED:
                self.duration.labels(step.step.value).observe(step.duration_seconds)
        for resolver, lookup in (("test", report.dns), ("control", report.control)):
            if lookup is not None:
                self.resolver_results.labels(resolver, lookup.result).inc()
                if isinstance(lookup.facts, DnsFacts) and lookup.facts.stray_responses:
                    self.stray_responses.labels(resolver).inc(lookup.facts.stray_responses)
        self._observe_raw(report)

    def _observe_raw(self, report: TargetReport) -> None:
        """The raw follow-ups' series: the blocking hop, and the reset fingerprints."""
        name = report.target.name
        if report.trace is not None:
            self.raw.record_trace(name, report.trace)
        else:
            self.raw.forget_trace(name)
        for step in report.steps:
            for found in step.evidence:
                if isinstance(found, RawEvidence) and found.key in FINGERPRINTS:
                    self.raw.record_fingerprint(name, FINGERPRINTS[found.key], found)  # type: ignore[arg-type]
