"""DNS consistency, as OONI's web_connectivity decides it: test answers that share nothing
with the control resolver's, and whose TLS does not validate for the name, are
`dns_inconsistent`. An address whose TLS validates is consistent whatever the control said.
Without TLS to vouch for an address, the page fetched from it is compared with the same URL
fetched from a control-resolved address (status, title, body length): a different page is
DNS hijacking even when no blockpage fingerprint knows it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from probes.results import DnsFacts, HttpFacts, StepResult
from probes.taxonomy import Code, Step

_NAME_FAILURES = frozenset({Code.TLS_CERT_INVALID, Code.TLS_HOSTNAME_MISMATCH})
# OONI's web_connectivity threshold: bodies whose shorter-to-longer length ratio is at most
# this are different pages (probe-cli: `match = proportion > 0.7`).
BODY_LENGTH_RATIO = 0.7


@dataclass(frozen=True, slots=True)
class ControlAnswer:
    """What the control resolver said, its own failure named (its code and cause)."""

    key: ClassVar[str] = "control"
    result: Code
    addresses: tuple[str, ...]
    detail: str = ""

    def summary(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class PageComparison:
    """The page from a control-resolved address, against the one from the test answers."""

    key: ClassVar[str] = "control_page"
    address: str
    status: int
    title: str | None
    body_bytes: int
    differs: str | None

    def summary(self) -> str | None:
        return None


def page_difference(test: HttpFacts, control: HttpFacts) -> str | None:
    """How the test page differs from the control page, or None when they look alike."""
    if test.status != control.status:
        return f"status {test.status} vs {control.status}"
    if test.title and control.title and test.title.casefold() != control.title.casefold():
        return f"title {test.title!r} vs {control.title!r}"
    small, large = sorted((test.body_bytes, control.body_bytes))
    if large and small / large <= BODY_LENGTH_RATIO:
        return f"body {test.body_bytes} vs {control.body_bytes} bytes"
    return None


def compare(test: HttpFacts, control: StepResult) -> PageComparison | None:
    """The comparison of the test page with a control fetch (None when it fetched nothing)."""
    if not isinstance(control.facts, HttpFacts) or control.address is None:
        return None
    facts = control.facts
    differs = page_difference(test, facts)
    return PageComparison(control.address, facts.status, facts.title, facts.body_bytes, differs)


def needs_page(dns: StepResult, control: StepResult | None) -> bool:
    """True when the answers share nothing and no TLS can vouch for them: a page is needed."""
    tested, truth = addresses_of(dns), addresses_of(control)
    return bool(dns.ok and tested and truth and not set(tested) & set(truth))


def addresses_of(dns: StepResult | None) -> tuple[str, ...]:
    """The usable addresses of a DNS result (none when it failed or did not run)."""
    return dns.facts.addresses if dns is not None and isinstance(dns.facts, DnsFacts) else ()


def control_answer(control: StepResult) -> ControlAnswer:
    """The control resolver's result as evidence for the test resolver's DNS step."""
    detail = "" if control.ok else control.detail
    return ControlAnswer(control.result, addresses_of(control), detail)


def inconsistent(
    dns: StepResult,
    control: StepResult | None,
    chains: Sequence[Sequence[StepResult]],
    page: PageComparison | None = None,
) -> str | None:
    """Why the test answers are inconsistent, or None when they are not (or cannot be
    judged: no control answer, and neither TLS nor a page comparison to confirm them)."""
    tested, truth = addresses_of(dns), addresses_of(control)
    if not truth or set(tested) & set(truth):
        return None
    tls = [s for chain in chains for s in chain if s.step == Step.TLS]
    if not tls:
        if page is None or page.differs is None:
            return None
        return (
            f"test answers {', '.join(tested)} share nothing with the control resolver's "
            f"({', '.join(truth)}) and serve another page: {page.differs}"
        )
    if any(s.ok for s in tls):
        return None
    if not any(s.result in _NAME_FAILURES for s in tls):
        return None
    return (
        f"test answers {', '.join(tested)} share nothing with the control resolver's "
        f"({', '.join(truth)}) and fail TLS validation for the name"
    )


def decide(
    dns: StepResult,
    control: StepResult | None,
    chains: Sequence[Sequence[StepResult]],
    page: PageComparison | None = None,
) -> StepResult:
    """The test resolver's DNS result as the report shows it: with the control's answer
    (and any page comparison) as evidence, and re-coded `dns_inconsistent` when the answers
    are judged inconsistent."""
    if control is None:
        return dns
    shown = dns.with_evidence(control_answer(control))
    if page is not None:
        shown = shown.with_evidence(page)
    why = inconsistent(dns, control, chains, page) if dns.ok else None
    if why is None:
        return shown
    return dataclasses.replace(shown, result=Code.DNS_INCONSISTENT, detail=why)
