"""Was a failed handshake triggered by the name? Repeat it to the same address with an
innocuous SNI, as OONI's sniblocking test does: if that one gets through (or fails otherwise),
the name made the difference."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from probes.results import StepResult
from probes.taxonomy import Code, Step

# Failures a name-based filter produces; a certificate or alert failure is not re-checked.
RECHECKED = frozenset({Code.TLS_RESET, Code.TLS_TIMEOUT, Code.TLS_EOF})


@dataclass(frozen=True, slots=True)
class SniEvidence:
    """The repeat's outcome. `triggered` is None when the repeat could not even connect."""

    key: ClassVar[str] = "control_sni"
    sni: str
    result: Code
    triggered: bool | None

    def summary(self) -> str | None:
        if not self.triggered:
            return None
        return f"with SNI {self.sni}: {self.result} (SNI-based)"


def needs_recheck(tls: StepResult) -> bool:
    """True for a handshake failure that a filter on the name could have caused."""
    return tls.result in RECHECKED


# The steps of the repeat, on a fresh connection to the same address.
HANDSHAKE = (Step.TCP, Step.TLS)
# Runs HANDSHAKE to the same address with the given SNI: the tcp result, then the tls one.
Handshake = Callable[[str], Awaitable[Sequence[StepResult]]]


async def recheck(failed: StepResult, handshake: Handshake, control_name: str) -> SniEvidence:
    """Repeat `failed` with `control_name` (the plan's control SNI, `raw.control_sni`: a name
    no censor targets, whose certificate will not match, so only "got through or not" is
    read from the repeat). Any outcome that is not the same kind of failure means the name
    made the difference."""
    connected, again = await handshake(control_name)
    if not connected.ok:
        return SniEvidence(control_name, connected.result, None)
    return SniEvidence(control_name, again.result, again.result != failed.result)
