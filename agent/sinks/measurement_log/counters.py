"""The measurement log's own series, registered in the agent's registry."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter

from agent.sinks.measurement_log.logfile import FAILURE_REASONS


class MeasurementLogMetrics:
    """`reachprobe_measurement_log_write_failures_total{reason}`: records not written.

    Use `for_registry`: one instance per registry, whatever the sinks built around it."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MeasurementLogMetrics] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> MeasurementLogMetrics:
        """The one instance registered in `registry`, created on first use."""
        if registry not in cls._by_registry:
            cls._by_registry[registry] = cls(registry)
        return cls._by_registry[registry]

    def __init__(self, registry: CollectorRegistry) -> None:
        self.write_failures = Counter(
            "reachprobe_measurement_log_write_failures",
            "Measurement log records not written, by reason (no_space, io_error, "
            "no_directory, read_only, permission, other).",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in FAILURE_REASONS:
            self.write_failures.labels(reason)  # every reason at 0, so that rate() works

    def failed(self, reason: str) -> None:
        """Count one record not written."""
        self.write_failures.labels(reason).inc()
