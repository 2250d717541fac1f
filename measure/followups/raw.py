"""Raw-packet follow-ups (docs/raw.md): for a target that is not reachable, where on the path
its trigger is stopped (a TTL-limited trace), and for a reset, whether the server or a
middlebox sent it. Off unless the volunteer opts in; without CAP_NET_RAW every probe comes
back `skipped`. scapy is imported only when these are built, never by an agent without them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from measure.plan import RawPlan, TargetPlan
from measure.report import TargetReport
from measure.verdict import Verdict
from probes.results import StepResult
from probes.taxonomy import Code

if TYPE_CHECKING:
    from probes.raw import Method, RawProber, Trace

# The step whose failure a verdict names decides which trigger localizes it. No trace for a
# DNS lie (no packet of ours is stopped), for an exchange's failure after the connection
# worked (no trigger of ours exists for it), for a dead vantage or an inconclusive result.
TRACE_BY_VERDICT: dict[Verdict, Method | None] = {
    Verdict.REACHABLE: None,
    Verdict.DNS_BLOCKING: None,
    Verdict.TCP_IP_BLOCKING: "syn",
    Verdict.PROTOCOL_BLOCKING: None,
    Verdict.TLS_BLOCKING: "tls",
    Verdict.HTTP_BLOCKING: "http",
    Verdict.VANTAGE_DOWN: None,
    Verdict.INCONCLUSIVE: None,
}
# `check --trace` traces every target with its own scheme's trigger.
TRACE_BY_SCHEME: dict[str, Method] = {"tcp": "syn", "tls": "tls", "https": "tls", "http": "http"}


def trace_method(verdict: Verdict, scheme: str, *, forced: bool = False) -> Method | None:
    """The trace for a target with `verdict`, or None when none is called for.

    `forced` (`check --trace`) traces any target with its own scheme's trigger, so a
    reachable one shows its path with no blocking hop.
    """
    method = TRACE_BY_VERDICT[verdict]
    if method is None and forced:
        method = TRACE_BY_SCHEME.get(scheme)
    return method


def ipv4_of(step: StepResult) -> str | None:
    """The IPv4 address a step ran against (raw probes are IPv4 only), or None."""
    endpoint = step.endpoint
    return endpoint.address if endpoint is not None and endpoint.family == "ipv4" else None


@dataclass(frozen=True, slots=True)
class RawEvidence:
    """A raw probe's result attached to a step, under `key` in its JSON data: `injection`
    (who sent a RST: the server, `genuine`, or a middlebox, `injected`), `dns_injection` (who
    sent competing DNS answers), `icmp_echo`. `note` extends the step's detail."""

    key: str
    status: str
    result: dict[str, object]
    verdict: str | None = None
    note: str | None = None

    def summary(self) -> str | None:
        return self.note if self.status == "ok" else None

    def to_json(self) -> dict[str, object]:
        return self.result


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
            chains = tuple([await self._fingerprints(report.target, c) for c in chains])
        dns = report.dns
        if self.plan.fingerprint and dns is not None and dns.result == Code.DNS_INJECTED:
            dns = await self._dns_fingerprint(report.target, dns)
        if self.plan.echo and report.target.scheme == "tcp" and report.target.http is None:
            chains = tuple(await asyncio.gather(*(self._echo(c) for c in chains)))
        trace = await self._trace(dataclasses.replace(report, chains=chains))
        return dataclasses.replace(report, dns=dns, chains=chains, trace=trace)

    async def _dns_fingerprint(self, target: TargetPlan, dns: StepResult) -> StepResult:
        """Who sent the competing answers: the resolver, or an injector on the path (UDP
        resolvers only: the question is asked again to the same server)."""
        if self.plan.resolver is None:
            return dns
        address, port = self.plan.resolver
        found = await self.prober.dns(address, target.host, port=port, window=self.plan.window)
        note = f"the competing answers look {found.verdict}"
        evidence = RawEvidence("dns_injection", found.status, found.to_json(), found.verdict, note)
        return dns.with_evidence(evidence)

    async def _echo(self, chain: tuple[StepResult, ...]) -> tuple[StepResult, ...]:
        """An ICMP echo to the address of a `tcp:` target's chain, as evidence on its TCP step."""
        head = chain[0] if chain else None
        address = ipv4_of(head) if head is not None else None
        if head is None or address is None:
            return chain
        found = await self.prober.echo(address)
        evidence = RawEvidence("icmp_echo", found.status, found.to_json())
        return (head.with_evidence(evidence), *chain[1:])

    async def _fingerprints(
        self, target: TargetPlan, chain: tuple[StepResult, ...]
    ) -> tuple[StepResult, ...]:
        return tuple(await asyncio.gather(*(self._fingerprint(target, s) for s in chain)))

    async def _fingerprint(self, target: TargetPlan, step: StepResult) -> StepResult:
        from probes.raw import wants_reset_fingerprint

        address = ipv4_of(step)
        if address is None or not wants_reset_fingerprint(step.result):
            return step
        found = await self.prober.reset(
            address, target.port, step.result, sni=target.sni, host=target.host
        )
        note = f"the reset looks {found.verdict}"
        evidence = RawEvidence("injection", found.status, found.to_json(), found.verdict, note)
        return step.with_evidence(evidence)

    async def _trace(self, report: TargetReport) -> Trace | None:
        target = report.target
        if not self.plan.trace:
            return None
        method = trace_method(report.verdict, target.scheme, forced=self.plan.forced)
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
