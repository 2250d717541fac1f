"""DNS consistency, as OONI's web_connectivity decides it: test answers that share nothing
with the control resolver's, and whose TLS does not validate for the name, are
`dns_inconsistent`. An address whose TLS validates is consistent whatever the control said."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from probes.results import DnsFacts, StepResult
from probes.taxonomy import Code, Step

_NAME_FAILURES = frozenset({Code.TLS_CERT_INVALID, Code.TLS_HOSTNAME_MISMATCH})


@dataclass(frozen=True, slots=True)
class ControlAnswer:
    """What the control resolver said, its own failure named (its code and cause)."""

    key: ClassVar[str] = "control"
    result: Code
    addresses: tuple[str, ...]
    detail: str = ""

    def summary(self) -> str | None:
        return None


def addresses_of(dns: StepResult | None) -> tuple[str, ...]:
    """The usable addresses of a DNS result (none when it failed or did not run)."""
    return dns.facts.addresses if dns is not None and isinstance(dns.facts, DnsFacts) else ()


def control_answer(control: StepResult) -> ControlAnswer:
    """The control resolver's result as evidence for the test resolver's DNS step."""
    detail = "" if control.ok else control.detail
    return ControlAnswer(control.result, addresses_of(control), detail)


def inconsistent(
    dns: StepResult, control: StepResult | None, chains: Sequence[Sequence[StepResult]]
) -> str | None:
    """Why the test answers are inconsistent, or None when they are not (or cannot be
    judged: no control answer, or no TLS step to confirm them)."""
    tested, truth = addresses_of(dns), addresses_of(control)
    if not truth or set(tested) & set(truth):
        return None
    tls = [s for chain in chains for s in chain if s.step == Step.TLS]
    if not tls or any(s.ok for s in tls):
        return None
    if not any(s.result in _NAME_FAILURES for s in tls):
        return None
    return (
        f"test answers {', '.join(tested)} share nothing with the control resolver's "
        f"({', '.join(truth)}) and fail TLS validation for the name"
    )


def decide(
    dns: StepResult, control: StepResult | None, chains: Sequence[Sequence[StepResult]]
) -> StepResult:
    """The test resolver's DNS result as the report shows it: with the control's answer as
    evidence, and re-coded `dns_inconsistent` when the answers are judged inconsistent."""
    if control is None:
        return dns
    shown = dns.with_evidence(control_answer(control))
    why = inconsistent(dns, control, chains) if dns.ok else None
    if why is None:
        return shown
    return dataclasses.replace(shown, result=Code.DNS_INCONSISTENT, detail=why)
