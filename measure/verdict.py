"""Rolls a target's step results up into one local verdict (a suspicion, not a finding:
"blocked" is decided across vantage points by the Prometheus rules)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from probes.results import StepResult
from probes.taxonomy import OK, SKIPPED, Step


class Verdict(StrEnum):
    """A target's local verdict."""

    REACHABLE = "reachable"
    DNS_BLOCKING = "dns_blocking"
    TCP_IP_BLOCKING = "tcp_ip_blocking"
    PROTOCOL_BLOCKING = "protocol_blocking"
    TLS_BLOCKING = "tls_blocking"
    HTTP_BLOCKING = "http_blocking"
    # The vantage's own connectivity is down (every canary failed the same way): not blocking.
    VANTAGE_DOWN = "vantage_down"
    INCONCLUSIVE = "inconclusive"


REACHABLE = Verdict.REACHABLE
INCONCLUSIVE = Verdict.INCONCLUSIVE
STEP_VERDICTS: dict[Step, Verdict] = {
    Step.DNS: Verdict.DNS_BLOCKING,
    Step.TCP: Verdict.TCP_IP_BLOCKING,
    Step.EXCHANGE: Verdict.PROTOCOL_BLOCKING,
    Step.TLS: Verdict.TLS_BLOCKING,
    Step.HTTP: Verdict.HTTP_BLOCKING,
}
VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
# web_connectivity's `blocking` (ooni/spec ts-017): the layer where the failure happened,
# false when accessible, null when nothing can be said about the target. OONI has no value of
# its own for a non-HTTP protocol failing after the connection was made (`protocol_blocking`);
# like a TLS or HTTP failure it fails above TCP, which web_connectivity calls "http-failure".
# A vantage whose own link is down says nothing about the target: null.
OONI_BLOCKING: dict[Verdict, str | bool | None] = {
    Verdict.REACHABLE: False,
    Verdict.DNS_BLOCKING: "dns",
    Verdict.TCP_IP_BLOCKING: "tcp_ip",
    Verdict.PROTOCOL_BLOCKING: "http-failure",
    Verdict.TLS_BLOCKING: "http-failure",
    Verdict.HTTP_BLOCKING: "http-failure",
    Verdict.VANTAGE_DOWN: None,
    Verdict.INCONCLUSIVE: None,
}


def first_failure(steps: Sequence[StepResult]) -> StepResult | None:
    """The first step that ran and did not succeed."""
    return next((s for s in steps if s.result not in (OK, SKIPPED)), None)


def chain_verdict(steps: Sequence[StepResult]) -> Verdict:
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


def deciding(dns: StepResult | None, chains: Sequence[Sequence[StepResult]]) -> list[StepResult]:
    """The steps that decide a target's verdict: its DNS step (if any) and the chain that
    speaks for it."""
    return [*([dns] if dns is not None else []), *representative(chains)]


def family_outcomes(chains: Sequence[Sequence[StepResult]]) -> dict[str, str]:
    """Per address family that was tried (`ipv4`, `ipv6`): `reachable` when one of its
    addresses' chains worked, else the result code where its representative chain failed.

    The verdict needs only one working address; this says which family did not work, and
    how (a path blocked for IPv6 alone stays visible behind a `reachable` target).
    """
    by_family: dict[str, list[Sequence[StepResult]]] = {}
    for chain in chains:
        if chain and chain[0].endpoint is not None:
            by_family.setdefault(chain[0].endpoint.family, []).append(chain)
    outcomes: dict[str, str] = {}
    for family in sorted(by_family):
        shown = representative(by_family[family])
        failure = first_failure(shown)
        verdict = chain_verdict(shown)
        outcomes[family] = failure.result.value if failure is not None else verdict.value
    return outcomes
