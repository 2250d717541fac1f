"""The probing loop: every target every interval, in cycles that never overlap.

Each cycle starts every target at a random offset within the jitter window (so that many
agents and many targets do not fire in lock-step), bounded by one global semaphore inside
the prober. A target runs once per cycle, so two runs of one target never overlap. A config
reload (SIGHUP) takes effect between cycles; a bad config is logged and the old one kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.chain import Prober, TargetReport
from agent.config import Config, ConfigError, TargetConfig, load_config
from agent.metrics import Metrics
from agent.output import why
from agent.verdict import INCONCLUSIVE

log = logging.getLogger("reachprobe")


async def run_cycle(
    prober: Prober,
    targets: Sequence[TargetConfig],
    jitter: float = 0.0,
    on_report: Callable[[TargetReport], None] | None = None,
) -> list[TargetReport]:
    """Probe every target once; the reports come back in the targets' order.

    `on_report` is called as each target finishes (progress display).
    """

    async def one(target: TargetConfig) -> TargetReport:
        if jitter > 0:
            await asyncio.sleep(random.uniform(0, jitter))
        try:
            report = await prober.probe(target)
        except Exception as exc:
            # A bug in one target's probing must not cost the cycle its other results.
            log.exception("probing %s failed unexpectedly", target.name)
            report = TargetReport(target, INCONCLUSIVE, error=f"internal error: {exc!r}"[:300])
        if on_report is not None:
            on_report(report)
        return report

    return list(await asyncio.gather(*(one(t) for t in targets)))


def summarize(reports: Sequence[TargetReport]) -> str:
    """One log line for a cycle: counts by verdict."""
    counts = Counter(r.verdict for r in reports)
    return ", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "no targets"


class Scheduler:
    """Runs cycles until stopped, reloading the config on request."""

    def __init__(self, config: Config, metrics: Metrics, config_path: Path | None) -> None:
        self.config = config
        # What the probes share (TLS context, fingerprints, resolver pools) belongs to a
        # config, not a cycle: built once here, replaced only by a reload.
        self.prober = Prober(config)
        self.metrics = metrics
        self.config_path = config_path
        self.cycles = 0
        self.last_cycle_end: float | None = None
        self.started = time.time()
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
            self.metrics.config_reloads.labels("failure").inc()
            log.error("config reload failed, keeping the old config:\n%s", exc)
            return
        if new.agent.listen != self.config.agent.listen:
            log.warning("agent.listen changed: the new address takes effect after a restart")
        old = self.prober
        self.config, self.prober = new, Prober(new)
        await old.aclose()
        self.metrics.configure(new)
        self.metrics.config_reloads.labels("success").inc()
        log.info("config reloaded: %d targets", len(new.targets))

    async def _one_cycle(self) -> None:
        config = self.config
        start = time.monotonic()
        reports = await run_cycle(self.prober, config.targets, config.agent.effective_jitter)
        for report in reports:
            self.metrics.observe(report)
            log.debug("%s: %s %s", report.target.name, report.verdict, why(report))
        elapsed = time.monotonic() - start
        self.cycles += 1
        self.last_cycle_end = time.time()
        self.metrics.cycle_done(elapsed, self.last_cycle_end)
        log.info("cycle %d done in %.1fs: %s", self.cycles, elapsed, summarize(reports))

    async def _wait(self, seconds: float) -> None:
        """Sleep until the next cycle, a reload request or a stop request."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._reload)]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when="FIRST_COMPLETED")
        finally:
            for w in waiters:
                w.cancel()

    async def run(self) -> None:
        """Cycle until stop() is called."""
        try:
            await self._cycles()
        finally:
            await self.prober.aclose()

    async def _cycles(self) -> None:
        self.metrics.configure(self.config)
        while not self._stop.is_set():
            if self._reload.is_set():
                await self._apply_reload()
            started = time.monotonic()
            cycle = asyncio.ensure_future(self._one_cycle())
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
            await self._wait(self.config.agent.interval - (time.monotonic() - started))

    def healthy(self) -> tuple[bool, str]:
        """Healthy while cycles keep finishing (or the first one is still due)."""
        interval = self.config.agent.interval
        grace = 3 * interval + self.config.agent.timeout * 4
        now = time.time()
        if self.last_cycle_end is None:
            age = now - self.started
            return age < grace, f"no cycle finished yet ({age:.0f}s since start)"
        age = now - self.last_cycle_end
        return age < grace, f"last cycle finished {age:.0f}s ago"
