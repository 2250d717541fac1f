"""Rolls a target's step results up into one local verdict (a suspicion, not a finding:
"blocked" is decided across vantage points by the Prometheus rules)."""

from __future__ import annotations

from collections.abc import Sequence

from probes.results import StepResult
from probes.taxonomy import OK, SKIPPED, Step

REACHABLE = "reachable"
INCONCLUSIVE = "inconclusive"
STEP_VERDICTS = {
    Step.DNS: "dns_blocking",
    Step.TCP: "tcp_ip_blocking",
    Step.TLS: "tls_blocking",
    Step.HTTP: "http_blocking",
}
VERDICTS = (REACHABLE, *STEP_VERDICTS.values(), INCONCLUSIVE)


def first_failure(steps: Sequence[StepResult]) -> StepResult | None:
    """The first step that ran and did not succeed."""
    return next((s for s in steps if s.result not in (OK, SKIPPED)), None)


def chain_verdict(steps: Sequence[StepResult]) -> str:
    """Verdict of one chain of steps: the first failing step decides.

    A `*_error` code says only that something unexpected happened, not that anything was
    blocked, so it gives `inconclusive`; so does a chain in which nothing ran at all.
    """
    failure = first_failure(steps)
    if failure is None:
        return REACHABLE if any(s.result == OK for s in steps) else INCONCLUSIVE
    if failure.result.endswith("_error"):
        return INCONCLUSIVE
    return STEP_VERDICTS[failure.step]


def progress(steps: Sequence[StepResult]) -> int:
    """How many steps of a chain succeeded before the first failure."""
    count = 0
    for step in steps:
        if step.result != OK:
            break
        count += 1
    return count


def representative(chains: Sequence[Sequence[StepResult]]) -> Sequence[StepResult]:
    """The chain that speaks for the target: a fully successful one if there is one, else the
    one that got furthest (it shows best where the path breaks), the first on a tie."""
    for chain in chains:
        if chain_verdict(chain) == REACHABLE:
            return chain
    return max(chains, key=progress) if chains else ()
