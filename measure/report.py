"""Typed reports: what one cycle learned about one target, and about the whole cycle.

Sinks (metrics, JSON, the status page ...) read these fields; none reads a step's raw data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from measure.followups.consistency import addresses_of
from measure.plan import Method, TargetPlan
from measure.verdict import REACHABLE, Verdict, deciding, family_outcomes, first_failure
from probes.results import Evidence, HttpFacts, StepResult, evidence_json
from probes.taxonomy import OK, SKIPPED, Code, Step

# The key of residual-blocking evidence (measure/followups/residual.py), which the report
# also shows at its top level.
RESIDUAL_KEY = "residual"


@dataclass(frozen=True, slots=True)
class TargetReport:
    """One target's cycle: the DNS step (test resolver, with the control's answer as
    evidence), the control resolver's own result, and one chain of steps per address."""

    target: TargetPlan
    verdict: Verdict
    dns: StepResult | None = None
    control: StepResult | None = None
    chains: tuple[tuple[StepResult, ...], ...] = ()
    error: str | None = None
    # Set when the vantage's health changed the verdict: what the steps alone said, and why.
    local_verdict: Verdict | None = None
    note: str | None = None
    # Where the trigger is stopped on the path (raw follow-ups; probes.raw.Trace).
    trace: Any = None
    # The QUIC steps (targets with `http3`), one per address: evidence beside the chains,
    # never their verdict (browsers fall back to TCP when HTTP/3 fails).
    quic: tuple[StepResult, ...] = ()

    @property
    def steps(self) -> list[StepResult]:
        """All step results: DNS first, then each address's chain, then the QUIC steps."""
        head = [self.dns] if self.dns is not None else []
        return [*head, *(s for chain in self.chains for s in chain), *self.quic]

    @property
    def quic_result(self) -> StepResult | None:
        """The QUIC step that speaks for the target: one that worked, else the first that ran
        (None when no QUIC step ran), as `reachprobe_probe_success{step="quic"}` reads them."""
        ran = [s for s in self.quic if s.result != SKIPPED]
        return next((s for s in ran if s.ok), ran[0] if ran else None)

    def quic_note(self) -> str | None:
        """What HTTP/3 says beside the verdict: blocked while the TCP path works, or working
        while the TCP path does not; None when it agrees with the verdict or did not run."""
        shown = self.quic_result
        if shown is None:
            return None
        if not shown.ok and self.verdict == REACHABLE:
            where = f" {shown.address}" if shown.address else ""
            return (
                f"HTTP/3 blocked: quic{where} {shown.result}: {shown.full_detail} "
                "(browsers fall back to TCP, which works)"
            )
        if shown.ok and self.verdict != REACHABLE and self.error is None:
            return "HTTP/3 (QUIC) works: browsers that use it reach the site"
        return None

    @property
    def deciding_steps(self) -> list[StepResult]:
        """DNS and the address chain that speaks for the target (see `representative`)."""
        return deciding(self.dns, self.chains)

    @property
    def addresses(self) -> dict[str, int]:
        """How many addresses each resolver returned (only resolvers that were asked)."""
        counts = {}
        if self.dns is not None:
            counts["test"] = len(addresses_of(self.dns))
        if self.control is not None:
            counts["control"] = len(addresses_of(self.control))
        return counts

    @property
    def families(self) -> dict[str, str]:
        """Per address family tried: `reachable`, or the code its addresses failed with."""
        return family_outcomes(self.chains)

    @property
    def residual(self) -> Evidence | None:
        """The residual-blocking evidence on the deciding steps
        (`measure.followups.residual.Residual`), if the cycle found any."""
        return next(
            (e for s in self.deciding_steps for e in s.evidence if e.key == RESIDUAL_KEY), None
        )

    @property
    def http(self) -> HttpFacts | None:
        """The facts of the deciding chain's HTTP step, if it ran and got body bytes (a slow
        or cut transfer too: the throughput gauge exists to see a throttle)."""
        step = next((s for s in self.deciding_steps if s.step == Step.HTTP), None)
        facts = step.facts if step is not None and step.result != SKIPPED else None
        return facts if isinstance(facts, HttpFacts) and facts.body_bytes else None

    def why(self) -> str:
        """The deciding failure in one line; for a target reachable over one address family
        only, the other family's failure; else empty."""
        if self.error is not None:
            return self.error
        if self.note is not None:
            return self.note
        failure = first_failure(self.deciding_steps)
        quic = self.quic_note()
        if failure is None:
            failed = [
                f"{f} failed: {code}" for f, code in self.families.items() if code != REACHABLE
            ]
            return "; ".join([*failed, *([quic] if quic else [])])
        where = f" {failure.address}" if failure.address else ""
        detail = f": {failure.full_detail}" if failure.full_detail else ""
        why = f"{failure.step.value}{where} {failure.result}{detail}"
        return f"{why}; {quic}" if quic else why

    def to_json(self) -> dict[str, object]:
        """The target's object in `check --format json`."""
        out: dict[str, object] = {
            "name": self.target.name,
            "group": self.target.group or None,
            "verdict": self.verdict.value,
            "families": self.families,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.error is not None:
            out["error"] = self.error
        if self.local_verdict is not None:
            out["local_verdict"] = self.local_verdict.value
            out["note"] = self.note
        if self.trace is not None:
            out["trace"] = self.trace.to_json()
        shown = self.quic_result
        if shown is not None:
            quic: dict[str, object] = {"result": shown.result.value}
            note = self.quic_note()
            if note is not None:
                quic["note"] = note
            out["quic"] = quic
        residual = self.residual
        if residual is not None:
            out[RESIDUAL_KEY] = evidence_json(residual)
        return out


@dataclass(frozen=True, slots=True)
class VantageHealth:
    """What the cycle learned about the vantage itself. None means "not checked"."""

    canaries: int = 0
    canaries_up: int = 0
    # Canaries whose connection got through (reachable, or failing only above TCP, as behind
    # a TLS-intercepting proxy): the link itself works.
    canaries_connected: int = 0
    canary_failures: tuple[Code, ...] = ()
    nxdomain_hijacked: bool | None = None
    nxdomain_answer: tuple[str, ...] = ()
    tcp_intercepted: bool | None = None
    # Set when the test resolver refused, or could not be reached, for every name looked up
    # this cycle (two at least): the codes it failed with. Empty when it answered any name.
    resolver_failures: tuple[Code, ...] = ()
    resolver_detail: str = ""

    @property
    def resolver_down(self) -> bool:
        """True when the test resolver failed every lookup of the cycle by refusing or
        being unreachable: the vantage's resolver is down, not the names blocked."""
        return bool(self.resolver_failures)

    @property
    def connectivity_up(self) -> bool | None:
        """False when no canary got a connection through (every one failed at DNS or TCP:
        a dead link, a walled garden); None without canaries."""
        return None if self.canaries == 0 else self.canaries_connected > 0

    def to_json(self) -> dict[str, object]:
        return {
            "canaries": self.canaries,
            "canaries_up": self.canaries_up,
            "canaries_connected": self.canaries_connected,
            "connectivity_up": self.connectivity_up,
            "canary_failures": [c.value for c in self.canary_failures],
            "nxdomain_hijacked": self.nxdomain_hijacked,
            "nxdomain_answer": list(self.nxdomain_answer),
            "tcp_intercepted": self.tcp_intercepted,
            "resolver_down": self.resolver_down,
            "resolver_failures": [c.value for c in self.resolver_failures],
        }


@dataclass(frozen=True, slots=True)
class AddressOutcome:
    """How one sampled address answered a TCP connect: a taxonomy code (`ok`, `tcp_*`)."""

    address: str
    result: str
    duration_seconds: float

    @property
    def reachable(self) -> bool:
        """True if the connect completed."""
        return self.result == OK


@dataclass(frozen=True)
class PrefixResult:
    """One prefix's sample in one cycle: counts, the reachable ratio and its 95% interval.

    `results` counts the sampled addresses by result code; `outcomes` keeps every address's
    own outcome, in sample order, so that a test vantage's sample can be joined with a control
    vantage's (`among_responsive`).
    """

    name: str
    cidr: str
    sampled: int
    reachable: int
    ratio: float
    ci_low: float
    ci_high: float
    results: Mapping[str, int]
    outcomes: tuple[AddressOutcome, ...] = field(default=(), repr=False)
    method: Method = "connect"

    def to_json(self, outcomes: bool = False) -> dict[str, object]:
        """The `prefixes[]` entry of `check --format json` (with per-address outcomes if asked)."""
        out: dict[str, object] = {
            "name": self.name,
            "cidr": self.cidr,
            "sampled": self.sampled,
            "reachable": self.reachable,
            "ratio": round(self.ratio, 6),
            "ci_low": round(self.ci_low, 6),
            "ci_high": round(self.ci_high, 6),
            "results": dict(self.results),
            "method": self.method,
        }
        if outcomes:
            out["outcomes"] = [
                {"address": o.address, "result": o.result, "duration_seconds": o.duration_seconds}
                for o in self.outcomes
            ]
        return out


@dataclass(frozen=True, slots=True)
class CycleReport:
    """A finished cycle: every target's report, in the configured order, and the vantage's
    health as the cycle saw it."""

    number: int
    started_at: float
    duration_seconds: float
    reports: Sequence[TargetReport]
    vantage: VantageHealth = VantageHealth()
    prefixes: Sequence[PrefixResult] = ()
    # How the cycle's start compared with its slot (set by the agent's scheduler).
    lateness_seconds: float = 0.0
    late: bool = False
    skipped_intervals: int = 0
