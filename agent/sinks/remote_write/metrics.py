"""The remote-write client's own series."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

DROP_REASONS = ("buffer_full", "expired", "rejected", "clock_backwards", "disk_error")


class RemoteWriteMetrics:
    """The remote-write client's own series, registered in the agent's registry.

    Use `for_registry`: a sink replaced on reload keeps counting in the same series.
    """

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RemoteWriteMetrics] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> RemoteWriteMetrics:
        """The one instance registered in `registry`, created on first use."""
        if registry not in cls._by_registry:
            cls._by_registry[registry] = cls(registry)
        return cls._by_registry[registry]

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "reachprobe_remote_write_sent_samples",
            "Samples the remote-write receiver accepted.",
            registry=registry,
        )
        self.dropped = Counter(
            "reachprobe_remote_write_dropped_samples",
            "Samples never delivered: buffer_full (oldest dropped for the bound), expired (older "
            "than queue.max_age), rejected (HTTP 4xx), clock_backwards (stamped before the last "
            "sent: the wall clock went back), disk_error (the queue could not be written).",
            ["reason"],
            registry=registry,
        )
        self.failures = Counter(
            "reachprobe_remote_write_failed_sends",
            "Sends that failed and will be retried (connection error, timeout, 5xx, 429).",
            registry=registry,
        )
        self.pending = Gauge(
            "reachprobe_remote_write_pending_samples",
            "Samples buffered, waiting for their first or next send.",
            registry=registry,
        )
        self.corrupt = Counter(
            "reachprobe_remote_write_corrupt_segments",
            "Queue segments found torn or corrupt on disk; the damaged part was skipped.",
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)

    def drop(self, reason: str, samples: int) -> None:
        """Count `samples` lost for `reason` (`corrupt` counts a damaged segment)."""
        if reason == "corrupt":
            self.corrupt.inc()
        elif samples:
            self.dropped.labels(reason).inc(samples)
