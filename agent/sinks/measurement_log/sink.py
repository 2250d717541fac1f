"""The measurement log sink: one OONI-format JSON line per target per cycle, size-rotated,
opt-in (docs/measurement-log.md).

A record never holds the volunteer's own address (`probe_ip` is OONI's privacy value). Each
record is built on its own, so that a bug in one costs only that one; the lines go to the file
(logfile.py) off the event loop, one cycle after the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from agent.config import AgentSection, Config, MeasurementLogSection
from agent.sinks import Sink
from agent.sinks.measurement_log.counters import MeasurementLogMetrics
from agent.sinks.measurement_log.logfile import LogFile
from agent.sinks.measurement_log.record import record
from measure.plan import ProbePlan
from measure.report import CycleReport, TargetReport

log = logging.getLogger("reachprobe")

# How long aclose() waits for the last lines to reach the disk.
CLOSE_TIMEOUT = 5.0


class MeasurementLogSink(Sink):
    """Appends every target's record to the configured file; does nothing while the config
    has no `measurement_log` section (a reload can switch it on, off or elsewhere). Records
    not written are counted in `registry` (a private one when none is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.agent = AgentSection()
        self.settings: MeasurementLogSection | None = None
        self.metrics = MeasurementLogMetrics.for_registry(registry or CollectorRegistry())
        self._file: LogFile | None = None
        self._last: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        # Ends every report id of this run: OONI's report ids end in a random part too.
        self._token = secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        # (target, error type) of records that could not be built, each logged once.
        self._broken: set[tuple[str, str]] = set()

    def configure(self, config: Config, plan: ProbePlan) -> None:
        self.agent = config.agent
        if config.measurement_log == self.settings:
            return
        old, self._file = self._file, None
        self.settings = config.measurement_log
        if self.settings is not None:
            self._file = LogFile(
                self.settings.path,
                self.settings.max_bytes,
                self.settings.backups,
                self.metrics.failed,
            )
        if old is not None:
            self._after_writes(old.close)

    def publish(self, cycle: CycleReport) -> None:
        logfile = self._file
        if logfile is None:
            return
        lines = [line for r in cycle.reports if (line := self._line(cycle, r)) is not None]
        self._after_writes(lambda: logfile.append(lines))

    def _after_writes(self, work: Callable[[], None]) -> None:
        """Run blocking `work` in a thread once the writes before it are done (in order)."""
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            await asyncio.to_thread(work)

        task = asyncio.get_running_loop().create_task(run())
        self._last = task
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _line(self, cycle: CycleReport, report: TargetReport) -> str | None:
        """One target's line, or None when its record cannot be built: a bug in one record
        must not cost the cycle's other lines (logged once per target and error type)."""
        try:
            return json.dumps(
                record(self.agent, cycle, report, self._token),
                ensure_ascii=False,
                separators=(",", ":"),
            )
        except Exception as error:  # any bug in one record: the other records go on
            key = (report.target.name, type(error).__name__)
            if key not in self._broken:
                self._broken.add(key)
                log.exception("measurement log: no record for target %s", report.target.name)
            return None

    async def written(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout` seconds) for the writes queued so far; False if some did
        not finish in time."""
        if not self._writes:
            return True
        _, pending = await asyncio.wait(set(self._writes), timeout=timeout)
        return not pending

    async def aclose(self) -> None:
        if not await self.written(CLOSE_TIMEOUT):
            log.warning("measurement log: writes did not finish in %.0f s", CLOSE_TIMEOUT)
        if self._file is not None:
            self._file.close()
            self._file = None
        self.settings = None
