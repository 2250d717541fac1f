"""The remote-write client's own series."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge


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
            "Samples never delivered: buffer_full (oldest dropped) or rejected (HTTP 4xx).",
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
        for reason in ("buffer_full", "rejected"):
            self.dropped.labels(reason)
