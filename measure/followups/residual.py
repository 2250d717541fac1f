"""Residual blocking: after a ClientHello (or an HTTP request) with a blocked name, some
censors (the GFW, Iran's) drop every packet between that client and that server address and
port for a minute or more. A later connect there fails at the SYN whatever name it would send,
so read alone it looks like an IP block of the address.

The evidence is a trigger followed by silence at the same endpoint while the vantage's link
works (canaries connected, or without canaries another address connected in the cycle):

- a trigger: a deciding chain that got its TCP connection through and then failed above it
  the way a filter on the name makes it fail (a timeout, a reset, an EOF), and whose own later
  connects to the same endpoint met silence: the confirmation retry
  (`confirm.RetryFailedEarlier` at the TCP step) or the innocuous-SNI re-check (`SniEvidence`
  whose repeat could not connect);
- silence met by others: a chain that failed at the TCP step of an endpoint with a trigger,
  from another target in the same cycle or remembered (`Memory`) for `WINDOW` seconds.

The trigger's target keeps the verdict its deciding chain gives (`tls_blocking`), with the
`Residual` evidence on its failed step. A target whose chain failed only at the SYN of a
silenced endpoint is not called `tcp_ip_blocking`: its verdict is `inconclusive`, the measured
one in `local_verdict` and the reason in `note`. Two targets that both look like the trigger of
one endpoint in one cycle (probed at the same moment: the second name's connection was caught
by the first one's block) cannot be told apart: both are `inconclusive`, and the next cycle
probes them one after the other (measure/cycle.py), which tells. docs/taxonomy.md, "Residual
blocking", says what one vantage can and cannot tell apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from measure.followups import confirm, sni
from measure.report import RESIDUAL_KEY, TargetReport, VantageHealth
from measure.verdict import INCONCLUSIVE, first_failure, representative
from probes.results import Endpoint, StepResult
from probes.taxonomy import Code, Step

# How long a trigger is remembered: residual blocks seen in the wild last 60 s (Iran) to
# 90-180 s (the GFW); longer, and a new IP block after an SNI block would read as residual.
WINDOW = 180.0
# How the silence was seen; the label values of the residual metric stay these few.
BY_SNI_RECHECK, BY_RETRY, BY_LATER_CONNECT = "sni_recheck", "retry", "later_connect"
SEEN_BY = (BY_SNI_RECHECK, BY_RETRY, BY_LATER_CONNECT)
NOTE = "residual blocking: {endpoint} went silent after {trigger}'s handshake failed there"
AMBIGUOUS = (
    "residual blocking: {endpoint} went silent after the handshakes of {triggers}, probed at "
    "the same moment; which name set it off is told apart when they are probed one after the "
    "other (next cycle)"
)


@dataclass(frozen=True, slots=True)
class Residual:
    """Evidence of residual blocking at `endpoint`: `trigger` is the target whose failed
    handshake preceded the silence (this target, or another on the same endpoint), and
    `seen_by` the later connect that met it (one of SEEN_BY)."""

    key: ClassVar[str] = RESIDUAL_KEY
    endpoint: Endpoint
    trigger: str
    seen_by: str

    def summary(self) -> str | None:
        return f"then residual blocking: {self.endpoint} silent ({self.seen_by})"

    def to_json(self) -> dict[str, object]:
        return {"endpoint": str(self.endpoint), "trigger": self.trigger, "seen_by": self.seen_by}


@dataclass(frozen=True, slots=True)
class Trigger:
    """A failed handshake that may have set off a residual block (loop time `at`)."""

    target: str
    endpoint: Endpoint
    at: float


@dataclass(slots=True)
class Memory:
    """The triggers of recent cycles, per target and endpoint (one prober's, so one
    config's)."""

    window: float = WINDOW
    triggers: dict[tuple[str, Endpoint], Trigger] = field(default_factory=dict)

    def recent(self, now: float) -> list[Trigger]:
        """The triggers not older than the window (older ones are forgotten)."""
        self.triggers = {k: t for k, t in self.triggers.items() if now - t.at <= self.window}
        return list(self.triggers.values())

    def suspects(self, now: float) -> dict[str, Endpoint]:
        """Targets whose handshake recently set off residual blocking, and where."""
        return {t.target: t.endpoint for t in self.recent(now)}

    def remember(self, triggers: Iterable[Trigger]) -> None:
        for trigger in triggers:
            self.triggers[trigger.target, trigger.endpoint] = trigger


def _chain(report: TargetReport) -> Sequence[StepResult]:
    return representative(report.chains)


def _trigger_step(chain: Sequence[StepResult]) -> StepResult | None:
    """The deciding chain's failure above TCP, when a filter on the name could cause it."""
    failed = first_failure(chain)
    if failed is None or failed.step in (Step.DNS, Step.TCP) or failed.endpoint is None:
        return None
    return failed if confirm.worth_confirming(failed) else None


def _own_silence(step: StepResult) -> str | None:
    """How this target's own later connects met silence after its failed handshake: the
    innocuous-SNI re-check first (an innocent name, the stronger evidence), then the retry."""
    if any(isinstance(e, sni.SniEvidence) and _connect_failed(e.result) for e in step.evidence):
        return BY_SNI_RECHECK
    if any(isinstance(e, confirm.RetryFailedEarlier) and e.silent for e in step.evidence):
        return BY_RETRY
    return None


def _connect_failed(code: Code) -> bool:
    return code.value.startswith("tcp_") and not code.value.endswith("_error")


def _silenced(chain: Sequence[StepResult]) -> StepResult | None:
    """The chain's TCP step, when the chain failed at the connect."""
    failed = first_failure(chain)
    if failed is None or failed.step != Step.TCP or failed.endpoint is None:
        return None
    return failed if _connect_failed(failed.result) else None


def _own_residual(report: TargetReport) -> tuple[StepResult, Residual] | None:
    """The target's failed handshake and the residual evidence its own later connects
    gave (the retry, the innocuous-SNI re-check), if they met silence."""
    handshake = _trigger_step(_chain(report))
    if handshake is None or handshake.endpoint is None:
        return None
    seen_by = _own_silence(handshake)
    if seen_by is None:
        return None
    return handshake, Residual(handshake.endpoint, report.target.name, seen_by)


def link_works(reports: Sequence[TargetReport], health: VantageHealth) -> bool:
    """True when the vantage's own link demonstrably worked this cycle: a canary connected,
    or (without canaries) some address accepted a connection."""
    if health.connectivity_up is not None:
        return health.connectivity_up
    return any(s.step == Step.TCP and s.ok for r in reports for s in r.steps)


def _with_evidence(report: TargetReport, step: StepResult, evidence: Residual) -> TargetReport:
    chains = tuple(
        tuple(s.with_evidence(evidence) if s is step else s for s in chain)
        for chain in report.chains
    )
    return dataclasses.replace(report, chains=chains)


def mark(
    reports: Sequence[TargetReport],
    health: VantageHealth,
    memory: Memory,
    now: float,
) -> tuple[TargetReport, ...]:
    """The cycle's reports with residual blocking marked (see the module's docstring); the
    cycle's triggers (those whose own later connects met silence) join `memory`. Nothing is
    marked or remembered when the vantage's link may be what went silent."""
    if not link_works(reports, health):
        return tuple(reports)
    own = [_own_residual(r) for r in reports]
    found = [
        Trigger(r.target.name, mine[1].endpoint, now)
        for r, mine in zip(reports, own, strict=True)
        if mine is not None
    ]
    by_endpoint: dict[Endpoint, list[str]] = {}
    for trigger in found:
        by_endpoint.setdefault(trigger.endpoint, []).append(trigger.target)
    known = {t.endpoint: t for t in [*memory.recent(now), *found]}
    memory.remember(found)
    marked = []
    for report, mine in zip(reports, own, strict=True):
        if mine is None:
            marked.append(_silenced_by(report, known))
            continue
        step, evidence = mine
        report = _with_evidence(report, step, evidence)
        names = by_endpoint[evidence.endpoint]
        if len(names) > 1 and report.local_verdict is None:
            note = AMBIGUOUS.format(endpoint=evidence.endpoint, triggers=", ".join(names))
            report = _inconclusive(report, note)
        marked.append(report)
    return tuple(marked)


def _inconclusive(report: TargetReport, note: str) -> TargetReport:
    return dataclasses.replace(
        report, verdict=INCONCLUSIVE, local_verdict=report.verdict, note=note
    )


def _silenced_by(report: TargetReport, known: dict[Endpoint, Trigger]) -> TargetReport:
    """A target whose chain failed only at the connect to an endpoint a trigger silenced:
    `inconclusive`, with the evidence, not `tcp_ip_blocking`."""
    connect = _silenced(_chain(report))
    trigger = known.get(connect.endpoint) if connect and connect.endpoint else None
    if connect is None or trigger is None:
        return report
    marked = _with_evidence(
        report, connect, Residual(trigger.endpoint, trigger.target, BY_LATER_CONNECT)
    )
    if report.local_verdict is not None:
        return marked  # the vantage's health already decided what this verdict may say
    return _inconclusive(marked, NOTE.format(endpoint=trigger.endpoint, trigger=trigger.target))
