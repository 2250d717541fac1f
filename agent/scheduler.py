"""The probing loop: every target every interval, in cycles that never overlap.

Each cycle starts every target at a random offset within the jitter window (so that many
agents and many targets do not fire in lock-step), bounded by one global semaphore inside
the prober. A target runs once per cycle, so two runs of one target never overlap. A config
reload (SIGHUP) takes effect between cycles; a bad config is logged and the old one kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.config import Config, ConfigError, load_config
from agent.explain import plural
from agent.pacing import CycleStart, Pacer
from agent.planner import make_plan
from agent.sinks import Sink
from measure.cycle import run_cycle
from measure.prober import Prober
from measure.report import CycleReport

log = logging.getLogger("reachprobe")


def summarize(cycle: CycleReport) -> str:
    """One log line for a cycle: counts by verdict."""
    counts = Counter(r.verdict.value for r in cycle.reports)
    return ", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "no targets"


class Scheduler:
    """Runs cycles until stopped, reloading the config on request, and publishes each
    finished cycle to its sinks."""

    def __init__(self, config: Config, sinks: Sequence[Sink], config_path: Path | None) -> None:
        self.config = config
        self.plan = make_plan(config)
        # What the probes share (TLS context, fingerprints, resolver pools) belongs to a
        # plan, not a cycle: built once here, replaced only by a reload.
        self.prober = Prober(self.plan)
        self.sinks = tuple(sinks)
        self.config_path = config_path
        self.cycles = 0
        # Monotonic seconds: health must not read a wall-clock jump as a stall (or as life).
        self.last_cycle_end: float | None = None
        self.started = time.monotonic()
        self._reload = asyncio.Event()
        self._stop = asyncio.Event()

    def request_reload(self) -> None:
        """Ask for a config reload before the next cycle (SIGHUP)."""
        self._reload.set()

    def stop(self) -> None:
        """Ask the loop to finish (SIGTERM/SIGINT); the running cycle is cancelled."""
        self._stop.set()

    async def _apply_reload(self) -> None:
        self._reload.clear()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._tell_sinks(lambda sink: sink.reloaded(False, time.time()))
            log.error("config reload failed, keeping the old config:\n%s", exc)
            return
        if new.agent.listen != self.config.agent.listen:
            log.warning("agent.listen changed: the new address takes effect after a restart")
        if new.remote_write != self.config.remote_write:
            log.warning("remote_write changed: the new settings take effect after a restart")
        old = self.prober
        self.config, self.plan = new, make_plan(new)
        self.prober = Prober(self.plan)
        await old.aclose()
        self._configure_sinks()
        self._tell_sinks(lambda sink: sink.reloaded(True, time.time()))
        source = self.config_path or "the built-in config"
        log.info("config reloaded from %s: %s", source, plural(len(new.targets), "target"))

    def _configure_sinks(self) -> None:
        self._tell_sinks(lambda sink: sink.configure(self.config, self.plan))

    def _tell_sinks(self, call: Callable[[Sink], None]) -> None:
        for sink in self.sinks:
            try:
                call(sink)
            except Exception:
                # One broken output must not cost the others their results.
                log.exception("sink %s failed", type(sink).__name__)

    async def _one_cycle(self, start: CycleStart) -> None:
        plan = self.plan
        cycle = await run_cycle(self.prober, plan.targets, plan.jitter, number=self.cycles + 1)
        cycle = dataclasses.replace(
            cycle, lateness_seconds=start.lateness, late=start.late, skipped_intervals=start.skipped
        )
        if start.late:
            log.warning(
                "cycle %d started %.1fs late (%d interval(s) without a cycle)",
                cycle.number, start.lateness, start.skipped,
            )  # fmt: skip
        for report in cycle.reports:
            log.debug("%s: %s %s", report.target.name, report.verdict.value, report.why())
        self.cycles += 1
        self.last_cycle_end = time.monotonic()
        self._tell_sinks(lambda sink: sink.publish(cycle))
        log.info(
            "cycle %d done in %.1fs: %s", self.cycles, cycle.duration_seconds, summarize(cycle)
        )

    async def _wait(self, seconds: float) -> None:
        """Sleep until the next cycle, a reload request or a stop request."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._reload)]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when="FIRST_COMPLETED")
        finally:
            for w in waiters:
                w.cancel()

    async def run(self) -> None:
        """Start the sinks, cycle until stop() is called, then close them."""
        try:
            for sink in self.sinks:
                await sink.start()
            await self._cycles()
        finally:
            await self.prober.aclose()
            for sink in self.sinks:
                await sink.aclose()

    async def _cycles(self) -> None:
        self._configure_sinks()
        pacer = Pacer(self.config.agent.interval, time.monotonic())
        while not self._stop.is_set():
            if self._reload.is_set():
                await self._apply_reload()
                pacer.set_interval(self.config.agent.interval)
            start = pacer.start(time.monotonic())
            cycle = asyncio.ensure_future(self._one_cycle(start))
            stopper = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([cycle, stopper], return_when="FIRST_COMPLETED")
            stopper.cancel()
            if not cycle.done():
                cycle.cancel()
                await asyncio.gather(cycle, return_exceptions=True)
                break
            if cycle.exception() is not None:
                # A bug must not stop the measurements: log it and try again next cycle.
                log.error("cycle failed", exc_info=cycle.exception())
            await self._wait(pacer.wait(time.monotonic()))

    def healthy(self) -> tuple[bool, str]:
        """Healthy while cycles keep finishing (or the first one is still due)."""
        interval = self.config.agent.interval
        grace = 3 * interval + self.config.agent.timeout * 4
        now = time.monotonic()
        if self.last_cycle_end is None:
            age = now - self.started
            return age < grace, f"no cycle finished yet ({age:.0f}s since start)"
        age = now - self.last_cycle_end
        return age < grace, f"last cycle finished {age:.0f}s ago"
