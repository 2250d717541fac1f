"""One cycle: every target probed once, each start spread over the jitter window."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from measure.followups import residual
from measure.followups.raw import RawFollowups
from measure.plan import TargetPlan
from measure.pool import map_bounded
from measure.prefixes import cycle_number, probe_prefixes
from measure.prober import Prober
from measure.report import CycleReport, PrefixResult, TargetReport
from measure.vantage import VantageChecks, adjust, assess
from measure.verdict import INCONCLUSIVE
from probes.results import Endpoint

log = logging.getLogger("reachprobe")

# Targets in flight at once, per slot of the `concurrency` bound. Well above one, because a
# target holds its slot only while its sockets are open (a DNS lookup listening for injected
# answers holds none), yet bounded whatever the number of targets.
IN_FLIGHT_PER_SLOT = 8
MIN_IN_FLIGHT = 1024


def in_flight(concurrency: int) -> int:
    """How many targets (and so tasks) a cycle has in flight at once."""
    return max(MIN_IN_FLIGHT, IN_FLIGHT_PER_SLOT * concurrency)


async def run_cycle(
    prober: Prober,
    targets: Sequence[TargetPlan],
    jitter: float = 0.0,
    on_report: Callable[[TargetReport], None] | None = None,
    number: int = 0,
) -> CycleReport:
    """Probe every target once; the reports come back in the targets' order.

    `on_report` is called as each target finishes (progress display). Each target starts at
    a random offset within `jitter` of the cycle's start; targets are taken up in the order of
    their offsets, at most `in_flight(concurrency)` at a time. Targets whose handshake set off
    residual blocking in a recent cycle (suspected triggers) start only once the others are
    done, so that their trigger cannot silence an address the others share, and those of one
    address one after the other, so that each one's outcome is its own (docs/taxonomy.md,
    "Residual blocking").
    """
    started_at, start = time.time(), time.monotonic()
    offsets = [random.uniform(0, jitter) if jitter > 0 else 0.0 for _ in targets]
    suspects = prober.residual.suspects(start)
    by_start = sorted(range(len(targets)), key=offsets.__getitem__)
    first: list[int] = []
    by_endpoint: dict[Endpoint, list[int]] = {}
    for index in by_start:
        endpoint = suspects.get(targets[index].name)
        if endpoint is None:
            first.append(index)
        else:
            by_endpoint.setdefault(endpoint, []).append(index)
    groups = list(by_endpoint.values())

    async def one(index: int) -> TargetReport:
        target = targets[index]
        delay = start + offsets[index] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            report = await prober.probe(target)
        except Exception as exc:
            # A bug in one target's probing must not cost the cycle its other results.
            log.exception("probing %s failed unexpectedly", target.name)
            report = TargetReport(target, INCONCLUSIVE, error=f"internal error: {exc!r}"[:300])
        if on_report is not None:
            on_report(report)
        return report

    async def one_after_another(indices: list[int]) -> list[TargetReport]:
        return [await one(index) for index in indices]

    limit = in_flight(prober.plan.concurrency)
    checks = asyncio.ensure_future(prober.vantage_checks(prober.plan.vantage))
    try:
        started = await map_bounded(one, first, limit)
        for group in await map_bounded(one_after_another, groups, limit):
            started += group
    except BaseException:
        checks.cancel()  # the cycle itself was cancelled (stop, reload)
        raise
    try:
        done = await checks
    except Exception:
        # A bug in the vantage checks must not cost the cycle its targets' results.
        log.exception("vantage checks failed unexpectedly")
        done = VantageChecks()
    order = [*first, *(index for group in groups for index in group)]
    in_order = sorted(zip(order, started, strict=True), key=lambda pair: pair[0])
    reports = [report for _, report in in_order]
    health = assess(reports, done, prober.plan.vantage)
    adjusted = tuple(adjust(r, health) for r in reports)
    adjusted = residual.mark(adjusted, health, prober.residual, time.monotonic())
    if prober.raw is not None:
        raw = prober.raw
        adjusted = tuple(await map_bounded(lambda r: with_raw(raw, r), adjusted, limit))
    prefixes = await sample_prefixes(prober, started_at)
    return CycleReport(number, started_at, time.monotonic() - start, adjusted, health, prefixes)


async def with_raw(raw: RawFollowups, report: TargetReport) -> TargetReport:
    """The report with its raw follow-ups; a bug in them costs only those follow-ups."""
    try:
        return await raw.run(report)
    except Exception:
        log.exception("raw follow-ups of %s failed unexpectedly", report.target.name)
        return report


async def sample_prefixes(prober: Prober, started_at: float) -> tuple[PrefixResult, ...]:
    """The cycle's prefix samples, each connect under the prober's concurrency bound (and
    after the targets), so that `concurrency` keeps bounding the agent's open sockets; the
    sample is the one every vantage sharing the seed draws for this interval
    (docs/prefixes.md)."""
    plan = prober.plan
    if not plan.prefixes:
        return ()
    cycle = cycle_number(started_at, plan.interval)
    results = await probe_prefixes(
        plan.prefixes,
        plan.prefix_seed,
        cycle,
        plan.timeout,
        plan.concurrency,
        plan.prefix_syn_rate,
        limiter=prober.semaphore,
    )
    return tuple(results)
