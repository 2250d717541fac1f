"""Confirmation: a failure that packet loss could have caused (a timeout, a reset, an EOF) is
repeated once on a fresh connection before a cycle reports it, so that one lost SYN,
ClientHello or datagram never reads as censorship. The first attempt stays as evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from probes.results import StepResult
from probes.taxonomy import Code

_TRANSIENT = ("_timeout", "_reset", "_eof")


@dataclass(frozen=True, slots=True)
class FirstAttempt:
    """How the first attempt ended, when it was repeated."""

    key: ClassVar[str] = "first_attempt"
    step: str
    result: Code
    detail: str

    def summary(self) -> str | None:
        return None


def worth_confirming(result: StepResult) -> bool:
    """True for a failure that loss on the path could explain; an answer (a refusal, a
    blockpage, a certificate, NXDOMAIN) is what it is and is not asked twice."""
    return result.result.value.endswith(_TRANSIENT)


def first_attempt(result: StepResult) -> FirstAttempt:
    """The evidence a repeated failure leaves on the result that replaced it."""
    return FirstAttempt(result.step.value, result.result, result.full_detail)
