"""Runs one target's chain of steps (dns -> tcp -> tls -> http) and the follow-ups, and
assembles its report. Holds what the steps share under one plan: the resolvers, the TLS
context, the fingerprints and the global concurrency bound."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

from measure.followups import consistency, sni
from measure.plan import ProbePlan, TargetPlan
from measure.report import TargetReport
from measure.verdict import chain_verdict, deciding, first_failure
from probes import http, tcp, tls
from probes.blockpages import BlockpageMatcher
from probes.bogons import BogonFilter
from probes.connection import Connection
from probes.dns import DnsClient, Resolver
from probes.results import StepResult, skipped


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
        self.bogons = BogonFilter(plan.bogon_exempt)
        self.blockpages = BlockpageMatcher(plan.fingerprints)
        self.semaphore = asyncio.Semaphore(plan.concurrency)
        self.test_dns = self._dns_client(plan.test_resolver)
        control = plan.control_resolver
        self.control_dns = self._dns_client(control) if control is not None else None
        self._expectations: dict[str, http.HttpExpectations] = {}

    def _dns_client(self, resolver: Resolver) -> DnsClient:
        return DnsClient(
            resolver,
            timeout=self.plan.timeout,
            injection_window=self.plan.injection_window,
            ssl_context=self.ssl_context,
            limiter=self.semaphore,
        )

    def _expect(self, target: TargetPlan) -> http.HttpExpectations:
        """The target's HTTP expectations, built once per plan."""
        assert target.http is not None
        if target.name not in self._expectations:
            self._expectations[target.name] = http.HttpExpectations(
                status=target.http.expect_status,
                body=target.http.expect_body,
                blockpages=self.blockpages,
                max_body=self.plan.max_body_bytes,
            )
        return self._expectations[target.name]

    async def _handshake(
        self, address: str, port: int, server_name: str | None
    ) -> tuple[StepResult, StepResult | None]:
        """Connect, and with `server_name` run a TLS handshake; the socket is closed after."""
        conn = Connection(address, port)
        try:
            connected = await tcp.run(conn, self.plan.timeout)
            if not connected.ok or server_name is None:
                return connected, None
            return connected, await tls.run(conn, server_name, self.ssl_context, self.plan.timeout)
        finally:
            conn.close()

    async def _connection_steps(self, target: TargetPlan, address: str) -> list[StepResult]:
        """The tcp (and tls) steps to one address, with the SNI follow-up. They hold one slot
        of the concurrency bound for as long as they hold a socket, so `concurrency` also
        bounds open sockets."""
        async with self.semaphore:
            connected, handshake = await self._handshake(address, target.port, target.sni)
            if handshake is None:
                return [connected]
            if sni.needs_recheck(handshake):
                evidence = await sni.recheck(
                    handshake, lambda name: self._handshake(address, target.port, name)
                )
                handshake = handshake.with_evidence(evidence)
            return [connected, handshake]

    async def _address_chain(self, target: TargetPlan, address: str) -> tuple[StepResult, ...]:
        chain = await self._connection_steps(target, address)
        rest = target.steps[len(chain) :]
        failed = first_failure(chain)
        conn = Connection(address, target.port)
        if failed is not None:
            why = f"{failed.step.value} failed"
            return (*chain, *(skipped(s, conn.endpoint, why) for s in rest))
        if target.http is not None:  # after TCP and TLS, only HTTP can be left
            async with self.semaphore:
                chain.append(
                    await http.run(
                        conn,
                        target.http.url,
                        ssl_context=self.ssl_context,
                        timeout=self.plan.timeout,
                        expect=self._expect(target),
                    )
                )
        return tuple(chain)

    async def _resolve(self, name: str) -> tuple[StepResult, StepResult | None]:
        """The test resolver's DNS result and the control resolver's, asked at once."""
        test = self.test_dns.resolve(name, self.bogons)
        if self.control_dns is None:
            return await test, None
        control = self.control_dns.resolve(name, self.bogons)
        test_result, control_result = await asyncio.gather(test, control)
        return test_result, control_result

    async def probe(self, target: TargetPlan) -> TargetReport:
        """Run the whole chain for one target and assemble its report."""
        if target.is_address:
            chains = (await self._address_chain(target, target.host),)
            return TargetReport(target, chain_verdict(deciding(None, chains)), chains=chains)
        dns, control = await self._resolve(target.host)
        addresses = consistency.addresses_of(dns) if dns.ok else ()
        if not addresses:
            chains: tuple[tuple[StepResult, ...], ...] = (
                tuple(skipped(s, None, "dns failed") for s in target.steps),
            )
        else:
            picked = interleave(addresses, self.plan.max_addresses)
            chains = tuple(await asyncio.gather(*(self._address_chain(target, a) for a in picked)))
        shown = consistency.decide(dns, control, chains)
        verdict = chain_verdict(deciding(shown, chains))
        return TargetReport(target, verdict, dns=shown, control=control, chains=chains)

    async def aclose(self) -> None:
        """Release the resolvers' connection pools."""
        await self.test_dns.aclose()
        if self.control_dns is not None:
            await self.control_dns.aclose()
