"""The per-target `reachprobe_` series, kept as a few numbers per target and rendered at
collect time (a custom collector), instead of one prometheus_client child object per series:
at 10,000 targets the children were most of the agent's memory.

What each series means is in the README's metrics reference; the semantics are those the
label children had: counters only grow while a target stays configured, a step's "last run"
series are dropped when the step did not run, and a target no longer configured loses all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from agent.sinks.prometheus.exposition import Row, RowFamily, escape
from measure.plan import TargetPlan
from measure.report import TargetReport
from measure.verdict import REACHABLE, VERDICTS
from probes.results import FAMILIES
from probes.taxonomy import SKIPPED, Step

VERDICT_VALUES = tuple(v.value for v in VERDICTS)
VERDICT = "reachprobe_target_verdict"
# A target's whole state set, by its verdict: one format per target instead of eight.
VERDICT_LINES = {
    current: "".join(
        f'{VERDICT}{{{{target="{{0}}",verdict="{v}"}}}} {"1.0" if v == current else "0.0"}\n'
        for v in VERDICT_VALUES
    ).format
    for current in VERDICT_VALUES
}


@dataclass(slots=True)
class TargetState:
    """What one target's series show: the counts so far and its last cycle's figures."""

    results: dict[tuple[str, str], float] = field(default_factory=dict)  # (step, result)
    success: dict[str, float] = field(default_factory=dict)  # step -> 1 or 0
    last_duration: dict[str, float] = field(default_factory=dict)  # step -> seconds
    addresses: dict[str, float] = field(default_factory=dict)  # resolver -> count
    family_up: dict[str, float] = field(default_factory=dict)  # ipv4/ipv6 -> 1 or 0
    verdict: str = ""
    throughput: float | None = None
    residual: bool = False

    def observe(self, report: TargetReport) -> None:
        """Take in one cycle's report of the target."""
        steps = report.steps
        for step in steps:
            if step.result != SKIPPED:
                key = (step.step.value, step.result.value)
                self.results[key] = self.results.get(key, 0.0) + 1.0
        chosen = report.deciding_steps
        for kind in Step:
            ran = [s for s in steps if s.step == kind]
            if not ran:
                continue
            self.success[kind.value] = 1.0 if any(s.ok for s in ran) else 0.0
            shown = next((s for s in chosen if s.step == kind), ran[0])
            if shown.result == SKIPPED:
                # A stale figure from an earlier cycle would read as current.
                self.last_duration.pop(kind.value, None)
            else:
                self.last_duration[kind.value] = shown.duration_seconds
        self.verdict = report.verdict.value
        families = report.families
        for family in FAMILIES:
            worked = families.get(family)
            if worked is None:
                self.family_up.pop(family, None)  # not tried this cycle
            else:
                self.family_up[family] = 1.0 if worked == REACHABLE else 0.0
        for resolver, count in report.addresses.items():
            self.addresses[resolver] = float(count)
        http = report.http
        self.throughput = http.bytes_per_second if http else None
        self.residual = report.residual is not None


class TargetSeries:
    """A prometheus_client collector of every configured target's series."""

    def __init__(self) -> None:
        self.targets: dict[str, TargetState] = {}
        self.info: tuple[tuple[str, str, str, str, str], ...] = ()

    def configure(self, targets: Sequence[TargetPlan]) -> list[str]:
        """Take in the configured targets; returns the names forgotten (no longer configured)."""
        self.info = tuple((t.name, t.host, str(t.port), t.scheme, t.group) for t in targets)
        names = {t.name for t in targets}
        gone = [name for name in self.targets if name not in names]
        for name in gone:
            del self.targets[name]
        return gone

    def observe(self, report: TargetReport) -> None:
        """Record one target's cycle."""
        name = report.target.name
        state = self.targets.get(name)
        if state is None:
            state = self.targets[name] = TargetState()
        state.observe(report)

    def _results(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for (step, result), count in s.results.items():
                yield (name, step, result), count

    def _success(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for step, value in s.success.items():
                yield (name, step), value

    def _last_duration(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for step, value in s.last_duration.items():
                yield (name, step), value

    def _up(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            yield (name,), 1.0 if s.verdict == REACHABLE else 0.0

    def _family_up(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for family, value in s.family_up.items():
                yield (name, family), value

    def _verdict(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for verdict in VERDICT_VALUES:
                yield (name, verdict), 1.0 if verdict == s.verdict else 0.0

    def _verdict_lines(self) -> list[str]:
        return [VERDICT_LINES[s.verdict](escape(name)) for name, s in self.targets.items()]

    def _addresses(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            for resolver, count in s.addresses.items():
                yield (name, resolver), count

    def _info(self) -> Iterator[Row]:
        for labels in self.info:
            yield labels, 1.0

    def _throughput(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            if s.throughput is not None:
                yield (name,), s.throughput

    def _residual(self) -> Iterator[Row]:
        for name, s in self.targets.items():
            yield (name,), 1.0 if s.residual else 0.0

    def _families(self, empty: bool) -> Iterable[RowFamily]:
        Rows = Callable[[], Iterable[Row]]

        def family(
            name: str,
            doc: str,
            typ: str,
            labels: tuple[str, ...],
            rows: Rows,
            render: Callable[[], list[str]] | None = None,
        ) -> RowFamily:
            if empty:
                return RowFamily(name, doc, typ, ("target", *labels), lambda: ())
            return RowFamily(name, doc, typ, ("target", *labels), rows, render)

        return (
            family("reachprobe_probe_results", "Step runs by result code.",
                   "counter", ("step", "result"), self._results),
            family("reachprobe_probe_success", "1 if the last run of the step succeeded.",
                   "gauge", ("step",), self._success),
            family("reachprobe_probe_last_duration_seconds",
                   "Duration of the last run of the step.", "gauge", ("step",),
                   self._last_duration),
            family("reachprobe_target_up", "1 if the whole chain worked on the last cycle.",
                   "gauge", (), self._up),
            family("reachprobe_target_family_up",
                   "1 if an address of the family (ipv4, ipv6) worked on the last cycle; absent "
                   "for a family not tried.", "gauge", ("family",), self._family_up),
            family(VERDICT, "The target's local verdict (a state set).",
                   "gauge", ("verdict",), self._verdict, self._verdict_lines),
            family("reachprobe_target_addresses",
                   "Addresses the resolver returned on the last cycle.", "gauge",
                   ("resolver",), self._addresses),
            family("reachprobe_target_info", "The target's configuration.", "gauge",
                   ("host", "port", "scheme", "group"), self._info),
            family("reachprobe_http_throughput_bytes_per_second",
                   "Body bytes per second of the last HTTP step (for throttling rules).",
                   "gauge", (), self._throughput),
            family("reachprobe_target_residual_blocking",
                   "1 if the last cycle saw residual blocking: the target's address went silent "
                   "after a handshake with a blocked name.", "gauge", (), self._residual),
        )  # fmt: skip

    def describe(self) -> Iterable[RowFamily]:
        """The families without samples (the registry's name check, the docs test)."""
        return self._families(empty=True)

    def collect(self) -> Iterable[RowFamily]:
        """The families, their samples made from the targets' state when read."""
        return self._families(empty=False)
