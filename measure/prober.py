"""Runs one target's chain of steps (dns, then per address the steps of the step table,
measure/steps.py) and the follow-ups, and assembles its report. Holds what the steps share
under one plan: the resolvers, the TLS context, the fingerprints and the global concurrency
bound."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Sequence

from measure.followups import confirm, consistency, residual, sni
from measure.followups.raw import RawFollowups
from measure.plan import ProbePlan, TargetPlan, VantagePlan
from measure.report import TargetReport
from measure.steps import QUIC_STEP, connect
from measure.vantage import VantageChecks, random_name
from measure.verdict import REACHABLE, chain_verdict, deciding, first_failure, representative
from probes import http, quic, tls
from probes.blockpages import BlockpageMatcher
from probes.bogons import BogonFilter
from probes.dns import DnsClient, Resolver
from probes.dns_fingerprints import DnsFingerprints
from probes.results import HttpFacts, StepResult, skipped
from probes.taxonomy import Step

Chain = tuple[StepResult, ...]


def interleave(addresses: Sequence[str], limit: int) -> list[str]:
    """Alternate IPv4 and IPv6 so that a cap keeps both families."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    mixed = [a for pair in zip(v4, v6, strict=False) for a in pair]
    n = min(len(v4), len(v6))
    return (mixed + v4[n:] + v6[n:])[:limit]


class Prober:
    """Probes targets under one plan; built once per config load, closed on reload."""

    def __init__(self, plan: ProbePlan) -> None:
        self.plan = plan
        self.ssl_context = tls.make_context(plan.ca_file)
        self.quic_trust = quic.make_trust(plan.ca_file)
        self.bogons = BogonFilter(plan.bogon_exempt)
        self.blockpages = BlockpageMatcher(plan.fingerprints)
        self.dns_fingerprints = DnsFingerprints(plan.dns_fingerprints)
        self.semaphore = asyncio.Semaphore(plan.concurrency)
        self.test_dns = self._dns_client(plan.test_resolver, self.semaphore)
        # A redirect's host is resolved inside the HTTP step, which already holds a slot:
        # waiting there for a second slot of the same pool deadlocks it once every slot is
        # an HTTP step (issue 22), so that lookup runs under the step's slot.
        self.redirect_dns = self._dns_client(plan.test_resolver, None)
        control = plan.control_resolver
        self.control_dns = (
            self._dns_client(control, self.semaphore) if control is not None else None
        )
        self._expectations: dict[str, http.HttpExpectations] = {}
        self.raw = RawFollowups(plan.raw) if plan.raw is not None else None
        # Residual-blocking triggers of recent cycles (kept across this plan's cycles).
        self.residual = residual.Memory()

    def _dns_client(self, resolver: Resolver, limiter: asyncio.Semaphore | None) -> DnsClient:
        return DnsClient(
            resolver,
            timeout=self.plan.timeout,
            injection_window=self.plan.injection_window,
            ssl_context=self.ssl_context,
            limiter=limiter,
            fingerprints=self.dns_fingerprints,
        )

    def expectations(self, target: TargetPlan) -> http.HttpExpectations:
        """The target's HTTP expectations, built once per plan."""
        assert target.http is not None
        if target.name not in self._expectations:
            self._expectations[target.name] = http.HttpExpectations(
                status=target.http.expect_status,
                body=target.http.expect_body,
                blockpages=self.blockpages,
                max_body=self.plan.max_body_bytes,
                body_sample=self.plan.body_sample,
                min_bytes=target.http.min_bytes,
                ranged=target.http.ranged,
            )
        return self._expectations[target.name]

    async def usable_addresses(self, host: str) -> Sequence[str]:
        """A redirect's host through the test resolver: its addresses, none on failure
        (a bogon answer is a failure: never connected to). Called with a slot held."""
        result = await self.redirect_dns.resolve(host, self.bogons)
        return consistency.addresses_of(result) if result.ok else ()

    async def _connect(
        self,
        target: TargetPlan,
        address: str,
        steps: Sequence[Step] | None = None,
        sni: str | None = None,
    ) -> list[StepResult]:
        """The connection path (measure/steps.py) under one slot of the concurrency bound,
        held for as long as the socket is, so that `concurrency` also bounds open sockets."""
        async with self.semaphore:
            return await connect(self, target, address, self.plan.timeout, steps, sni)

    async def _address_chain(self, target: TargetPlan, address: str) -> Chain:
        """The chain to one address: a transient failure is confirmed once on a fresh
        connection (the try that got furthest decides, `confirm.decide`), and when the
        deciding chain failed its handshake it is re-checked with an innocuous SNI."""
        chain = await self._connect(target, address)
        failed = first_failure(chain)
        if failed is not None and confirm.worth_confirming(failed):
            chain = confirm.decide(chain, await self._connect(target, address))
        handshake = next((s for s in chain if s.step == Step.TLS), None)
        if handshake is not None and sni.needs_recheck(handshake):
            evidence = await sni.recheck(
                handshake,
                lambda name: self._connect(target, address, sni.HANDSHAKE, name),
                self.plan.control_sni,
            )
            chain[chain.index(handshake)] = handshake.with_evidence(evidence)
        return tuple(chain)

    async def _chains(self, target: TargetPlan, addresses: Sequence[str]) -> tuple[Chain, ...]:
        """Chains to the addresses, `max_addresses` at a time, until one works or
        `address_limit` addresses were tried: any working address makes the target
        reachable, whatever order the resolver returned them in."""
        ordered = interleave(addresses, self.plan.address_limit)
        batch = self.plan.max_addresses
        chains: list[Chain] = []
        for start in range(0, len(ordered), batch):
            group = ordered[start : start + batch]
            chains += await asyncio.gather(*(self._address_chain(target, a) for a in group))
            if any(chain_verdict(c) == REACHABLE for c in chains):
                break
        return tuple(chains)

    async def _single_chain(self, target: TargetPlan, address: str) -> tuple[Chain, ...]:
        return (await self._address_chain(target, address),)

    async def _beside_quic(
        self,
        target: TargetPlan,
        addresses: Sequence[str],
        chains: Coroutine[object, object, tuple[Chain, ...]],
    ) -> tuple[tuple[Chain, ...], tuple[StepResult, ...]]:
        """The `chains`, and for an `http3` target its QUIC steps at the same time (a target
        without costs no extra task)."""
        if target.quic is None:
            return await chains, ()
        done, quic_steps = await asyncio.gather(chains, self._quic_steps(target, addresses))
        return done, quic_steps

    async def _quic_steps(
        self, target: TargetPlan, addresses: Sequence[str]
    ) -> tuple[StepResult, ...]:
        """The QUIC step to each address of the first batch the chains try, beside them (one
        slot each): browsers fall back to TCP when HTTP/3 fails, so it never decides the
        verdict (docs/taxonomy.md)."""
        batch = interleave(addresses, min(self.plan.max_addresses, self.plan.address_limit))
        steps = await asyncio.gather(*(self._connect(target, a, QUIC_STEP) for a in batch))
        return tuple(result for (result,) in steps)

    async def _resolve(self, name: str) -> tuple[StepResult, StepResult | None]:
        """The test resolver's DNS result and the control resolver's, asked at once; a
        transient test failure is asked once more before it is reported."""
        test = self.test_dns.resolve(name, self.bogons)
        if self.control_dns is None:
            result, control = await test, None
        else:
            gathered = await asyncio.gather(test, self.control_dns.resolve(name, self.bogons))
            result, control = gathered
        if confirm.worth_confirming(result):
            again = await self.test_dns.resolve(name, self.bogons)
            result = again.with_evidence(confirm.first_attempt(result))
        return result, control

    async def _control_page(
        self, target: TargetPlan, control: StepResult | None, chains: Sequence[Chain]
    ) -> consistency.PageComparison | None:
        """For a plain-HTTP target whose answers share nothing with the control resolver's:
        the same URL fetched from a control-resolved address, compared with the test page."""
        if target.http is None or target.uses_tls:
            return None
        shown = next((s for s in representative(chains) if s.step == Step.HTTP), None)
        if shown is None or not isinstance(shown.facts, HttpFacts):
            return None
        truth = consistency.addresses_of(control)
        if not truth:
            return None
        [fetched] = await self._connect(target, truth[0], (Step.HTTP,))
        return consistency.compare(shown.facts, fetched)

    async def probe(self, target: TargetPlan) -> TargetReport:
        """Run the whole chain for one target and assemble its report."""
        if target.is_address:
            chains, quic_steps = await self._beside_quic(
                target, [target.host], self._single_chain(target, target.host)
            )
            verdict = chain_verdict(deciding(None, chains))
            return TargetReport(target, verdict, chains=chains, quic=quic_steps)
        dns, control = await self._resolve(target.host)
        addresses = consistency.addresses_of(dns) if dns.ok else ()
        if not addresses:
            chains: tuple[Chain, ...] = (
                tuple(skipped(s, None, "dns failed") for s in target.steps),
            )
            quic_steps = (skipped(Step.QUIC, None, "dns failed"),) if target.quic else ()
        else:
            chains, quic_steps = await self._beside_quic(
                target, addresses, self._chains(target, addresses)
            )
        page = None
        if consistency.needs_page(dns, control):
            page = await self._control_page(target, control, chains)
        shown = consistency.decide(dns, control, chains, page)
        verdict = chain_verdict(deciding(shown, chains))
        return TargetReport(
            target, verdict, dns=shown, control=control, chains=chains, quic=quic_steps
        )

    async def vantage_checks(self, plan: VantagePlan) -> VantageChecks:
        """The cycle's own checks: a name that cannot exist through the test resolver, and
        a connection to an address that must never answer."""

        async def nxdomain() -> StepResult | None:
            if plan.nxdomain_suffix is None:
                return None
            return await self.test_dns.resolve(random_name(plan.nxdomain_suffix), self.bogons)

        async def tcp_canary() -> StepResult | None:
            if plan.tcp_canary is None:
                return None
            address, port = plan.tcp_canary
            canary = TargetPlan("tcp canary", "", "tcp", address, port)
            [connected] = await self._connect(canary, address)
            return connected

        nx, tcp_result = await asyncio.gather(nxdomain(), tcp_canary())
        return VantageChecks(nxdomain=nx, tcp=tcp_result)

    async def aclose(self) -> None:
        """Release the resolvers' connection pools."""
        await self.test_dns.aclose()
        await self.redirect_dns.aclose()
        if self.control_dns is not None:
            await self.control_dns.aclose()
