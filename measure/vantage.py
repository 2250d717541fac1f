"""Vantage health, every cycle: is this vantage's own connectivity up (canaries), does its
resolver rewrite NXDOMAIN, does a middlebox accept every TCP connection? A dead home link or a
walled garden must not read as blocking, and a bare TCP connect proves nothing on a network
where anything accepts a SYN."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from measure.followups.consistency import addresses_of
from measure.plan import VantagePlan
from measure.report import TargetReport, VantageHealth
from measure.verdict import REACHABLE, Verdict, first_failure
from probes.errors import ERRNO_KINDS
from probes.results import StepResult
from probes.taxonomy import Code, Failure, Step

INTERCEPTED_NOTE = (
    "a middlebox on this network accepts TCP connections to any address (the vantage's "
    "never-answering address connected): a bare connect proves nothing here"
)
VANTAGE_DOWN_NOTE = "every canary failed the same way: this vantage's own connectivity is down"
RESOLVER_DOWN_NOTE = (
    "the test resolver refused, or could not be reached, for every name this cycle ({why}): "
    "this vantage's resolver is down, which says nothing about the names"
)
# A resolver this many names could not reach at all is down; one name is no contrast.
MIN_RESOLVER_NAMES = 2
# How an unreachable resolver reads: the DNS step has no code of its own for it, and keeps
# the errno's text as its detail (probes/errors.py `describe`).
_UNREACHABLE_DETAILS = frozenset(
    os.strerror(number)
    for number, kind in ERRNO_KINDS.items()
    if kind in (Failure.HOST_UNREACHABLE, Failure.NET_UNREACHABLE)
)
# The steps whose failure at every canary means the vantage's own link is down; a canary that
# connected and failed above (TLS behind an intercepting proxy) shows interception instead.
_LINK_STEPS = frozenset({Step.DNS, Step.TCP})
# What the random-name lookup can say about NXDOMAIN rewriting; anything else says nothing.
_NXDOMAIN_VERDICTS = frozenset({Code.OK, Code.DNS_BOGON, Code.DNS_NXDOMAIN})


@dataclass(frozen=True, slots=True)
class VantageChecks:
    """The raw results of the cycle's own checks."""

    nxdomain: StepResult | None = None
    tcp: StepResult | None = None


def random_name(suffix: str) -> str:
    """A name that cannot exist under `suffix`: 20 random letters and digits."""
    return f"rp-{secrets.token_hex(10)}.{suffix.strip('.')}"


def assess(
    reports: Sequence[TargetReport], checks: VantageChecks, plan: VantagePlan
) -> VantageHealth:
    """Roll the canaries' reports and the checks up into the vantage's health."""
    canaries = [r for r in reports if r.target.group == plan.canary_group]
    up = [r for r in canaries if r.verdict == REACHABLE]
    connected = 0
    failures: list[Code] = []
    for report in canaries:
        failed = first_failure(report.deciding_steps)
        if failed is None or failed.step not in _LINK_STEPS:
            connected += 1  # a connection got through: whatever failed above it, not the link
        elif failed.result not in failures:
            failures.append(failed.result)
    hijacked = None
    nx = checks.nxdomain
    if nx is not None and nx.result in _NXDOMAIN_VERDICTS:
        # An address (a bogon one too) for a name that cannot exist: rewritten NXDOMAIN.
        hijacked = nx.result != Code.DNS_NXDOMAIN
    intercepted = None if checks.tcp is None else checks.tcp.ok
    lookups = [r.dns for r in reports if r.dns is not None]
    resolver = resolver_failures([*lookups, *([nx] if nx is not None else [])])
    return VantageHealth(
        canaries=len(canaries),
        canaries_up=len(up),
        canaries_connected=connected,
        canary_failures=tuple(failures) if not connected else (),
        nxdomain_hijacked=hijacked,
        nxdomain_answer=addresses_of(nx) if hijacked else (),
        tcp_intercepted=intercepted,
        resolver_failures=resolver,
        resolver_detail=next((r.detail for r in lookups if r.detail), ""),
    )


def _resolver_unusable(result: StepResult) -> bool:
    """True for a lookup that never got an answer about the name: the resolver refused
    (ICMP port unreachable, rcode REFUSED) or could not be reached."""
    if result.result == Code.DNS_REFUSED:
        return True
    return result.result == Code.DNS_ERROR and result.detail in _UNREACHABLE_DETAILS


def resolver_failures(lookups: Sequence[StepResult]) -> tuple[Code, ...]:
    """The codes the test resolver failed with when it failed every lookup of the cycle by
    refusing or being unreachable (and there were enough lookups to tell); else empty. One
    name refused while another resolves is evidence about that name, not the resolver."""
    if len(lookups) < MIN_RESOLVER_NAMES or not all(map(_resolver_unusable, lookups)):
        return ()
    return tuple(dict.fromkeys(r.result for r in lookups))


def _only_tcp_proved(report: TargetReport) -> bool:
    """True when the target's chain had nothing beyond a TCP connect that proves the peer,
    or when what should have proved it failed (the middlebox answered instead)."""
    steps = [s for s in report.deciding_steps if s.step != Step.DNS]
    beyond = [s for s in steps if s.step != Step.TCP]
    if not beyond:
        return report.verdict == REACHABLE
    return report.verdict == Verdict.PROTOCOL_BLOCKING


def adjust(report: TargetReport, health: VantageHealth) -> TargetReport:
    """The target's report as the vantage's health lets it stand: `vantage_down` for a
    failure the canaries share, `inconclusive` for what only a TCP connect decided on a
    network that accepts every connection. The measured verdict stays in `local_verdict`."""
    failed = first_failure(report.deciding_steps)
    if failed is not None and failed.step == Step.DNS and failed.result in health.resolver_failures:
        why = ", ".join(c.value for c in health.resolver_failures)
        if health.resolver_detail:
            why += f": {health.resolver_detail}"
        return _replace(report, Verdict.VANTAGE_DOWN, RESOLVER_DOWN_NOTE.format(why=why))
    shared = failed is not None and failed.result in health.canary_failures
    if health.connectivity_up is False and shared:
        return _replace(report, Verdict.VANTAGE_DOWN, VANTAGE_DOWN_NOTE)
    if health.tcp_intercepted and _only_tcp_proved(report):
        return _replace(report, Verdict.INCONCLUSIVE, INTERCEPTED_NOTE)
    return report


def _replace(report: TargetReport, verdict: Verdict, note: str) -> TargetReport:
    return dataclasses.replace(report, verdict=verdict, local_verdict=report.verdict, note=note)
