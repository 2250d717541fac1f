"""Typed results shared by every probe step."""

from __future__ import annotations

from dataclasses import dataclass, field

from probes.taxonomy import OK, SKIPPED, Step, ooni_failure


@dataclass(slots=True)
class StepResult:
    """The outcome of one probe step against one address.

    `result` is exactly one code of the taxonomy; `detail` is a short human-readable
    explanation (never the volunteer's own address); `data` holds step-specific facts
    (DNS answers, TLS version, certificate expiry, HTTP status ...) for the JSON output.
    """

    step: Step
    result: str
    address: str | None = None
    duration_seconds: float = 0.0
    detail: str = ""
    data: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result == OK

    @property
    def ooni_failure(self) -> str | None:
        return ooni_failure(self.result)

    def to_json(self) -> dict[str, object]:
        """The JSON shape of DESIGN.md's `check --format json` step."""
        out: dict[str, object] = {
            "step": self.step.value,
            "address": self.address,
            "result": self.result,
            "ooni_failure": self.ooni_failure,
            "duration_seconds": round(self.duration_seconds, 6),
            "detail": self.detail,
        }
        if self.data:
            out["data"] = self.data
        return out


def format_endpoint(address: str, port: int) -> str:
    """`ip:port`, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def skipped(step: Step, address: str | None, why: str) -> StepResult:
    """A step that did not run because an earlier one failed."""
    return StepResult(step=step, result=SKIPPED, address=address, detail=why)
