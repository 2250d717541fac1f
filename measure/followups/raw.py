"""Raw-packet follow-ups (docs/raw.md): for a target that is not reachable, where on the path
its trigger is stopped (a TTL-limited trace), and for a reset, whether the server or a
middlebox sent it. Off unless the volunteer opts in; without CAP_NET_RAW every probe comes
back `skipped`. scapy is imported only when these are built, never by an agent without them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from measure.plan import RawPlan, TargetPlan
from measure.report import TargetReport
from probes.results import StepResult

if TYPE_CHECKING:
    from probes.raw import RawProber, Trace


@dataclass(frozen=True, slots=True)
class InjectionEvidence:
    """Who sent the RST that ended a step: the server (`genuine`), a middlebox forging it
    (`injected`), or `unknown`, with the packets compared."""

    key: ClassVar[str] = "injection"
    status: str
    verdict: str
    fingerprint: dict[str, object]

    def summary(self) -> str | None:
        return f"the reset looks {self.verdict}" if self.status == "ok" else None


def ipv4_of(step: StepResult) -> str | None:
    """The IPv4 address a step ran against (raw probes are IPv4 only), or None."""
    if step.address is None or step.address.startswith("["):
        return None
    address = step.address.rpartition(":")[0]
    try:
        return address if ipaddress.ip_address(address).version == 4 else None
    except ValueError:
        return None


class RawFollowups:
    """The raw follow-ups of one plan: one prober, so that its rate limits hold across every
    target and cycle. A target is traced again only when its verdict changes (or always, for
    `check --trace`); the last trace is carried forward meanwhile."""

    def __init__(self, plan: RawPlan) -> None:
        from probes.raw import RawProber  # scapy loads here, and only here

        self.plan = plan
        self.prober: RawProber = RawProber(plan.options)
        self._traces: dict[str, tuple[str, Trace]] = {}

    async def run(self, report: TargetReport) -> TargetReport:
        """The report with its reset fingerprints and trace added."""
        chains = report.chains
        if self.plan.fingerprint:
            chains = tuple(
                tuple(await asyncio.gather(*(self._fingerprint(report.target, s) for s in c)))
                for c in chains
            )
        trace = await self._trace(dataclasses.replace(report, chains=chains))
        return dataclasses.replace(report, chains=chains, trace=trace)

    async def _fingerprint(self, target: TargetPlan, step: StepResult) -> StepResult:
        from probes.raw import wants_reset_fingerprint

        address = ipv4_of(step)
        if address is None or not wants_reset_fingerprint(step.result.value):
            return step
        found = await self.prober.reset(
            address, target.port, step.result.value, sni=target.sni, host=target.host
        )
        return step.with_evidence(InjectionEvidence(found.status, found.verdict, found.to_json()))

    async def _trace(self, report: TargetReport) -> Trace | None:
        from probes.raw import trace_method

        target = report.target
        if not self.plan.trace:
            return None
        method = trace_method(report.verdict.value, target.scheme, forced=self.plan.forced)
        fallback = target.host if target.is_address else None
        address = next((a for a in map(ipv4_of, report.deciding_steps) if a), fallback)
        if method is None or address is None:
            self._traces.pop(target.name, None)
            return None
        cached = self._traces.get(target.name)
        if cached is not None and cached[0] == report.verdict.value and not self.plan.forced:
            return cached[1]
        found = await self.prober.trace(
            address, target.port, method, sni=target.sni, host=target.host
        )
        self._traces[target.name] = (report.verdict.value, found)
        return found
