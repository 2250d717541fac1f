"""The agent's side of the raw probes (docs/raw.md): their metrics. The probes themselves are
planned by agent/planner.py and run by measure/followups/raw.py; nothing here imports scapy."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from probes.raw import DnsFingerprint, ResetFingerprint, Trace

FingerprintKind = Literal["rst", "dns"]


class RawMetrics:
    """`reachprobe_path_blocking_hop{target}` and
    `reachprobe_injection_fingerprints_total{target,kind,verdict}`.

    Label values are bounded: `target` is a configured name, `kind` is `rst` or `dns`,
    `verdict` is `injected`, `genuine` or `unknown`. A skipped or failed raw probe records
    nothing: absent means unknown.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocking_hop = Gauge(
            "reachprobe_path_blocking_hop",
            "TTL at which the target's trigger is stopped on the path (absent when unknown).",
            ["target"],
            registry=registry,
        )
        self.fingerprints = Counter(
            "reachprobe_injection_fingerprints",
            "Reset and DNS injection fingerprints, by verdict.",
            ["target", "kind", "verdict"],
            registry=registry,
        )

    def record_trace(self, target: str, trace: Trace) -> None:
        """Set the target's blocking hop from a finished trace, or remove the series."""
        if trace.status == "ok" and trace.blocking_hop is not None:
            self.blocking_hop.labels(target).set(trace.blocking_hop)
        else:
            self.forget_trace(target)

    def forget_trace(self, target: str) -> None:
        """Remove the target's blocking hop (a reachable target, a target no longer configured)."""
        with contextlib.suppress(KeyError):
            self.blocking_hop.remove(target)

    def record_fingerprint(
        self, target: str, kind: FingerprintKind, result: ResetFingerprint | DnsFingerprint
    ) -> None:
        """Count one fingerprint that ran (status `ok`)."""
        if result.status == "ok":
            self.fingerprints.labels(target, kind, result.verdict).inc()
