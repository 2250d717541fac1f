"""The remote-write sink: after each cycle, the agent's metrics are queued for a receiver.

Push mode for agents nobody can scrape. `publish` is synchronous and never blocks: it takes one
snapshot of the registry (one timestamp for every sample) and queues it; the sending happens in
the task that `start` launches (sender.py: batching, retries, backoff; buffer.py: the bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import CollectorRegistry

from agent.config import RemoteWriteConfig
from agent.sinks import Sink
from agent.sinks.remote_write.metrics import RemoteWriteMetrics
from agent.sinks.remote_write.sender import RemoteWriter
from agent.sinks.remote_write.snapshot import Snapshot, snapshot_registry
from measure.report import CycleReport

log = logging.getLogger("reachprobe")


class RemoteWriteSink(Sink):
    """Pushes snapshots of `registry` to `config.url` with Prometheus remote-write 1.0."""

    def __init__(self, registry: CollectorRegistry, config: RemoteWriteConfig) -> None:
        self.registry = registry
        self.config = config
        self.identity = {"job": config.job, "instance": config.instance}
        self.writer = RemoteWriter(config, RemoteWriteMetrics.for_registry(registry))
        # The latest snapshot queued; the next one shares its label tuples when nothing changed.
        self.last_snapshot: Snapshot | None = None
        self._task: asyncio.Task[None] | None = None

    def publish(self, cycle: CycleReport | None = None) -> None:
        """Queue a snapshot of every sample in the registry, stamped now.

        `cycle` (the scheduler's report) is accepted for the sink interface and not used: the
        registry already holds what the cycle measured.
        """
        self.last_snapshot = snapshot_registry(
            self.registry, self.identity, time.time(), self.last_snapshot
        )
        self.writer.enqueue(self.last_snapshot)

    async def start(self) -> None:
        """Start the sending task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.writer.run(), name="remote-write")

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop sending, try to deliver what is buffered within `timeout` (default: the
        config's timeout), then close; what is still buffered after that is lost."""
        if self._task is not None:
            # Let a send in flight finish (each is bounded by the config's timeout) rather
            # than cancel it: a cancelled send may have landed and would be sent twice.
            self.writer.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.timeout + 1)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if not await self.writer.flush(self.config.timeout if timeout is None else timeout):
            log.warning(
                "remote-write: %d samples not delivered at shutdown", self.writer.buffer.samples
            )
        await self.writer.aclose()
