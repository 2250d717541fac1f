"""The remote-write sink: after each cycle, the agent's metrics are queued for a receiver.

Push mode for agents nobody can scrape. The samples come from the agent's registry, which the
CLI creates and hands to every sink that writes or reads series (a prometheus_client
`CollectorRegistry`: its `collect()` is the interface), not from another sink: `publish` only
notes the cycle's measurement time, and the snapshot is taken
once every sink has seen the cycle (the scheduler publishes to all sinks in one synchronous
pass; `call_soon` runs after it), so the order of the sink list does not matter.

Samples are stamped at measurement: the end of the cycle that measured them (wall time), the
same for every sample of a cycle. A stamp not after the previous one (the wall clock went back)
would be refused by the receiver as out of order; those snapshots are dropped, counted
(`clock_backwards`) and logged once, until the clock is past the last stamp again.

The queue is on disk when `queue.directory()` names one (docs/reliability.md), else in
memory; the sending happens in the task that `start` launches (sender.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import CollectorRegistry

from agent.config import RemoteWriteConfig
from agent.sinks import Sink
from agent.sinks.remote_write.buffer import Queue, SampleBuffer
from agent.sinks.remote_write.disk import DiskQueue
from agent.sinks.remote_write.metrics import RemoteWriteMetrics
from agent.sinks.remote_write.sender import RemoteWriter
from agent.sinks.remote_write.snapshot import Snapshot, snapshot_registry
from measure.report import CycleReport

log = logging.getLogger("reachprobe")

# How long a shutdown with a disk queue waits for a send in flight before cancelling it (the
# batch stays on disk, unacknowledged): SIGTERM returns within 2 s whatever the receiver does.
DISK_SHUTDOWN_GRACE = 1.0


def open_queue(config: RemoteWriteConfig, metrics: RemoteWriteMetrics) -> Queue:
    """The disk queue where the config names a directory, else (or if it cannot be opened:
    logged) the memory buffer."""
    directory = config.queue.directory()
    if directory is not None:
        try:
            return DiskQueue(
                directory, config.queue.max_bytes, config.queue.max_age, metrics.drop, time.time
            )
        except OSError as exc:
            log.error("remote-write: cannot use %s for the queue (%s); memory only", directory, exc)
    return SampleBuffer(config.max_buffered_samples)


class RemoteWriteSink(Sink):
    """Pushes snapshots of `registry` to `config.url` with Prometheus remote-write 1.0."""

    def __init__(self, registry: CollectorRegistry, config: RemoteWriteConfig) -> None:
        self.registry = registry
        self.config = config
        self.identity = {"job": config.job, "instance": config.instance}
        metrics = RemoteWriteMetrics.for_registry(registry)
        self.writer = RemoteWriter(config, metrics, open_queue(config, metrics))
        self.disk = isinstance(self.writer.buffer, DiskQueue)
        # The latest snapshot queued; the next one shares its label tuples when nothing changed.
        self.last_snapshot: Snapshot | None = None
        self._clock_back = False
        self._task: asyncio.Task[None] | None = None

    def publish(self, cycle: CycleReport) -> None:
        """Queue a snapshot of every sample, stamped with the cycle's end, once every sink has
        published it."""
        stamp = cycle.started_at + cycle.duration_seconds
        asyncio.get_running_loop().call_soon(self.snapshot, stamp)

    def snapshot(self, stamp: float) -> None:
        """Queue a snapshot of the registry stamped `stamp` (unix seconds)."""
        snapshot = snapshot_registry(self.registry, self.identity, stamp, self.last_snapshot)
        last = self.last_snapshot
        if last is not None and snapshot.timestamp_ms <= last.timestamp_ms:
            if not self._clock_back:
                log.warning(
                    "remote-write: the wall clock went back %.1fs; samples stamped before "
                    "the last sent are dropped (counted) until it is past it again",
                    (last.timestamp_ms - snapshot.timestamp_ms) / 1000,
                )
            self._clock_back = True
            self.writer.metrics.drop("clock_backwards", len(snapshot))
            return
        if self._clock_back:
            log.info("remote-write: the wall clock is past the last stamp again")
            self._clock_back = False
        self.last_snapshot = snapshot
        self.writer.enqueue(snapshot)

    async def start(self) -> None:
        """Start the sending task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.writer.run(), name="remote-write")

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop sending and close. With a disk queue, everything is on disk already: a send in
        flight gets `DISK_SHUTDOWN_GRACE` and the rest waits for the next start. In memory,
        try to deliver what is buffered within `timeout` (default: the config's timeout);
        what is still buffered after that is lost."""
        await asyncio.sleep(0)  # a snapshot of the last cycle, still to be taken
        if self._task is not None:
            # Let a send in flight finish (each is bounded by the config's timeout) rather
            # than cancel it: a cancelled send may have landed and would be sent twice.
            self.writer.stop()
            grace = DISK_SHUTDOWN_GRACE if self.disk else self.config.timeout + 1
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self.disk:
            if self.writer.buffer.samples:
                log.info(
                    "remote-write: %d samples kept on disk for the next start",
                    self.writer.buffer.samples,
                )
        elif not await self.writer.flush(self.config.timeout if timeout is None else timeout):
            log.warning(
                "remote-write: %d samples not delivered at shutdown", self.writer.buffer.samples
            )
        await self.writer.aclose()
