"""Confirmation: a failure that packet loss could have caused (a timeout, a reset, an EOF) is
repeated once on a fresh connection before a cycle reports it, so that one lost SYN,
ClientHello or datagram never reads as censorship.

One attempt model for an address: of the two tries, the chain that got furthest decides, as
across addresses (`measure.verdict.representative`). The try that does not decide stays as
evidence on the deciding failure: `first_attempt` when the retry decided, `retry` when the
retry failed earlier than the first try. A retry that fails earlier is what residual blocking
looks like (the handshake's name triggered a block of the whole address and port, and the
retry meets it at the SYN): it is kept, named, and never becomes the verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from measure.verdict import first_failure, progress
from probes.results import StepResult
from probes.taxonomy import Code, Step

_TRANSIENT = ("_timeout", "_reset", "_eof")
SILENT_AFTER_TRIGGER = "the address went silent after the trigger"


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one try of the chain ended: its failed step, the code and the detail."""

    step: str
    result: Code
    detail: str


@dataclass(frozen=True, slots=True)
class FirstAttempt(Attempt):
    """How the first attempt ended, when it was repeated."""

    key: ClassVar[str] = "first_attempt"

    def summary(self) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class RetryFailedEarlier(Attempt):
    """The retry's failure, when it failed at an earlier step than the deciding first try."""

    key: ClassVar[str] = "retry"

    @property
    def silent(self) -> bool:
        """True when the retry's connect itself failed: the address stopped answering."""
        return self.step == Step.TCP.value

    def summary(self) -> str | None:
        if self.silent:
            return f"retry: {self.result}, {SILENT_AFTER_TRIGGER} (a sign of residual blocking)"
        return f"retry failed earlier: {self.step} {self.result}"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "step": self.step,
            "result": self.result.value,
            "detail": self.detail,
        }
        if self.silent:
            out["note"] = SILENT_AFTER_TRIGGER
        return out


def worth_confirming(result: StepResult) -> bool:
    """True for a failure that loss on the path could explain; an answer (a refusal, a
    blockpage, a certificate, NXDOMAIN) is what it is and is not asked twice."""
    return result.result.value.endswith(_TRANSIENT)


def first_attempt(result: StepResult) -> FirstAttempt:
    """The evidence a repeated failure leaves on the result that replaced it."""
    return FirstAttempt(result.step.value, result.result, result.full_detail)


def decide(first: Sequence[StepResult], retry: Sequence[StepResult]) -> list[StepResult]:
    """The chain that speaks for an address after a confirmation retry: the one that got
    furthest (the retry on a tie: it confirmed the failure), with the other try as evidence
    on the deciding chain's failure."""
    failed = first_failure(first)
    assert failed is not None, "only a failed first try is retried"
    if progress(retry) >= progress(first):
        chain = list(retry)
        at = list(first).index(failed)
        chain[at] = chain[at].with_evidence(first_attempt(failed))
        return chain
    again = first_failure(retry)
    assert again is not None, "a retry that got less far failed"
    chain = list(first)
    evidence = RetryFailedEarlier(again.step.value, again.result, again.full_detail)
    chain[chain.index(failed)] = failed.with_evidence(evidence)
    return chain
