"""One cycle: every target probed once, each start spread over the jitter window."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from measure.plan import ProbePlan, TargetPlan
from measure.prober import Prober
from measure.report import CycleReport, TargetReport
from measure.vantage import VantageChecks, adjust, assess
from measure.verdict import INCONCLUSIVE
from probes.prefix import PrefixResult, cycle_number, probe_prefixes

log = logging.getLogger("reachprobe")


async def run_cycle(
    prober: Prober,
    targets: Sequence[TargetPlan],
    jitter: float = 0.0,
    on_report: Callable[[TargetReport], None] | None = None,
    number: int = 0,
) -> CycleReport:
    """Probe every target once; the reports come back in the targets' order.

    `on_report` is called as each target finishes (progress display).
    """
    started_at, start = time.time(), time.monotonic()

    async def one(target: TargetPlan) -> TargetReport:
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

    checks = asyncio.ensure_future(prober.vantage_checks(prober.plan.vantage))
    try:
        reports = await asyncio.gather(*(one(t) for t in targets))
    except BaseException:
        checks.cancel()  # the cycle itself was cancelled (stop, reload)
        raise
    try:
        done = await checks
    except Exception:
        # A bug in the vantage checks must not cost the cycle its targets' results.
        log.exception("vantage checks failed unexpectedly")
        done = VantageChecks()
    health = assess(reports, done, prober.plan.vantage)
    adjusted = tuple(adjust(r, health) for r in reports)
    if prober.raw is not None:
        adjusted = tuple(await asyncio.gather(*(with_raw(prober, r) for r in adjusted)))
    prefixes = await sample_prefixes(prober.plan, started_at)
    return CycleReport(number, started_at, time.monotonic() - start, adjusted, health, prefixes)


async def with_raw(prober: Prober, report: TargetReport) -> TargetReport:
    """The report with its raw follow-ups; a bug in them costs only those follow-ups."""
    assert prober.raw is not None
    try:
        return await prober.raw.run(report)
    except Exception:
        log.exception("raw follow-ups of %s failed unexpectedly", report.target.name)
        return report


async def sample_prefixes(plan: ProbePlan, started_at: float) -> tuple[PrefixResult, ...]:
    """The cycle's prefix samples. They run after the targets, so that `concurrency` keeps
    bounding the agent's open sockets; the sample is the one every vantage sharing the seed
    draws for this interval (docs/prefixes.md)."""
    if not plan.prefixes:
        return ()
    cycle = cycle_number(started_at, plan.interval)
    results = await probe_prefixes(
        plan.prefixes, plan.prefix_seed, cycle, plan.timeout, plan.concurrency, plan.prefix_syn_rate
    )
    return tuple(results)
