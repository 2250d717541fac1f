"""Runs one target's chain of steps (dns -> tcp -> tls -> http) and builds its report."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import yaml

from agent.config import BlockpageConfig, Config, ResolverConfig, TargetConfig
from agent.resources import shipped_file
from agent.verdict import chain_verdict, first_failure, representative
from probes import http, tcp, tls
from probes.blockpages import BlockpageMatcher, Fingerprint
from probes.bogons import BogonFilter
from probes.dns import DnsClient, Resolver
from probes.results import StepResult, format_endpoint, skipped
from probes.taxonomy import Step

# Used to tell SNI filtering from IP filtering after a reset handshake: a name no censor
# targets, whose certificate will not match (so only reset vs. not-reset is read).
CONTROL_SNI = "www.example.org"
SNI_CHECKED = frozenset({"tls_reset", "tls_timeout", "tls_eof"})
_T = TypeVar("_T")


@dataclass(slots=True)
class TargetReport:
    """Everything one cycle learned about one target."""

    target: TargetConfig
    verdict: str
    dns: list[StepResult] = field(default_factory=list)
    chains: list[list[StepResult]] = field(default_factory=list)
    addresses: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def steps(self) -> list[StepResult]:
        """All step results: DNS first, then each address's chain."""
        return [*self.dns, *(s for chain in self.chains for s in chain)]

    @property
    def deciding_steps(self) -> list[StepResult]:
        """DNS and the address chain that speaks for the target (see `representative`)."""
        return [*self.dns, *representative(self.chains)]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.target.name,
            "group": self.target.group or None,
            "verdict": self.verdict,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@functools.cache
def _shipped_blockpages() -> tuple[BlockpageConfig, ...]:
    shipped = yaml.safe_load(shipped_file("blockpages.yaml").read_text("utf-8")) or []
    return tuple(BlockpageConfig.model_validate(e) for e in shipped)


def load_fingerprints(extra: Sequence[BlockpageConfig]) -> BlockpageMatcher:
    """The shipped blockpage fingerprints plus the config's own."""
    entries = [*_shipped_blockpages(), *extra]
    return BlockpageMatcher(
        Fingerprint(
            name=e.name,
            pattern=re.compile(e.pattern, re.IGNORECASE),
            location=e.location,
            country=e.country,
            source=e.source,
        )
        for e in entries
    )


def steps_after_dns(target: TargetConfig) -> list[Step]:
    """The steps a target runs against each address, in order."""
    steps = [Step.TCP]
    if target.uses_tls:
        steps.append(Step.TLS)
    if target.url is not None:
        steps.append(Step.HTTP)
    return steps


def _interleave(addresses: Sequence[str], limit: int) -> list[str]:
    """Alternate IPv4 and IPv6 so that a cap keeps both families."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    mixed = [a for pair in zip(v4, v6, strict=False) for a in pair]
    n = min(len(v4), len(v6))
    return (mixed + v4[n:] + v6[n:])[:limit]


class Prober:
    """Probes targets under one config. Holds what the steps share: resolvers, the TLS
    context, fingerprints and the global concurrency bound."""

    def __init__(self, config: Config) -> None:
        self.config = config
        agent = config.agent
        ca = str(config.tls.ca_file) if config.tls.ca_file else None
        self.ssl_context = tls.make_context(ca)
        self.bogons = BogonFilter(config.resolvers.bogon_exempt)
        self.blockpages = load_fingerprints(config.blockpages)
        self.semaphore = asyncio.Semaphore(agent.concurrency)
        self.test_dns = self._dns_client(config.resolvers.test)
        control = config.resolvers.control
        self.control_dns = self._dns_client(control) if control else None

    def _dns_client(self, resolver: ResolverConfig) -> DnsClient:
        return DnsClient(
            Resolver(resolver.type, resolver.endpoints(), resolver.url, resolver.server_name),
            timeout=self.config.agent.timeout,
            injection_window=self.config.resolvers.injection_window,
            ssl_context=self.ssl_context,
            limiter=self.semaphore,
        )

    async def _bounded(self, work: Callable[[], Awaitable[_T]]) -> _T:
        async with self.semaphore:
            return await work()

    async def _handshake(
        self, address: str, port: int, server_name: str | None
    ) -> tuple[StepResult, StepResult | None]:
        """Connect, and with `server_name` run a TLS handshake; the socket is closed after."""
        timeout = self.config.agent.timeout
        endpoint = format_endpoint(address, port)
        connected, sock = await tcp.connect(address, port, timeout)
        if sock is None or server_name is None:
            if sock is not None:
                sock.close()
            return connected, None
        try:
            return connected, await tls.handshake(
                sock, server_name, self.ssl_context, timeout, endpoint
            )
        finally:
            sock.close()

    async def _connection_steps(self, target: TargetConfig, address: str) -> list[StepResult]:
        """The tcp (and tls) steps to one address. They hold one slot of the concurrency
        bound for as long as they hold a socket, so `concurrency` also bounds open sockets."""
        port = target.portnumber
        async with self.semaphore:
            sni = target.hostname if target.uses_tls else None
            connected, handshake = await self._handshake(address, port, sni)
            if handshake is None:
                return [connected]
            if handshake.result in SNI_CHECKED:
                await self._confirm_sni(handshake, address, port)
            return [connected, handshake]

    async def _address_chain(self, target: TargetConfig, address: str) -> list[StepResult]:
        chain = await self._connection_steps(target, address)
        rest = steps_after_dns(target)[len(chain) :]
        failed = first_failure(chain)
        if failed is not None:
            endpoint = format_endpoint(address, target.portnumber)
            return chain + [skipped(s, endpoint, f"{failed.step.value} failed") for s in rest]
        if rest:  # after TCP and TLS, only HTTP can be left
            chain.append(await self._bounded(lambda: self._http(target, address)))
        return chain

    async def _http(self, target: TargetConfig, address: str) -> StepResult:
        assert target.url is not None
        expect = http.HttpExpectations(
            status=tuple(target.expect_status),
            body=re.compile(target.expect_body) if target.expect_body else None,
            blockpages=self.blockpages,
            max_body=self.config.agent.max_body_bytes,
        )
        return await http.fetch(
            target.url,
            address,
            ssl_context=self.ssl_context,
            timeout=self.config.agent.timeout,
            expect=expect,
        )

    async def _confirm_sni(self, failed: StepResult, address: str, port: int) -> None:
        """Repeat a failed handshake with an innocuous SNI, as OONI's sniblocking test does:
        if that one gets through, the failure was triggered by the name, not the address."""
        connected, again = await self._handshake(address, port, CONTROL_SNI)
        outcome = again if again is not None else connected
        failed.data["control_sni"] = {"sni": CONTROL_SNI, "result": outcome.result}
        if again is None:
            return  # could not even connect again: nothing learned about the name
        # Any answer that is not the same kind of failure means the name made the difference.
        by_name = again.result != failed.result
        failed.data["sni_triggered"] = by_name
        if by_name:
            failed.detail += f"; with SNI {CONTROL_SNI}: {again.result} (SNI-based)"

    async def _resolve(
        self, target: TargetConfig, report: TargetReport
    ) -> tuple[list[str] | None, list[str]]:
        """Resolve through the test (and control) resolver: (usable test answers or None if
        the DNS step failed, the control resolver's answers)."""
        control = None
        if self.control_dns is not None:
            test, control = await asyncio.gather(
                self.test_dns.resolve(target.hostname, self.bogons),
                self.control_dns.resolve(target.hostname, self.bogons),
            )
        else:
            test = await self.test_dns.resolve(target.hostname, self.bogons)
        report.dns.append(test.result)
        report.addresses["test"] = len(test.addresses)
        if control is not None:
            report.addresses["control"] = len(control.addresses)
            test.result.data["control"] = {
                "result": control.result.result,
                "addresses": control.addresses,
            }
        return (
            test.addresses if test.result.ok else None,
            control.addresses if control is not None else [],
        )

    def _check_consistency(self, report: TargetReport, control: list[str]) -> None:
        """Like OONI's web_connectivity: test answers that share nothing with the control
        resolver's, and whose TLS does not validate for the name, are `dns_inconsistent`.
        An address whose TLS validates is consistent whatever the control resolver said."""
        dns_step = report.dns[0]
        tested = dns_step.data.get("addresses") or []
        if not control or set(tested) & set(control):
            return
        tls_steps = [s for chain in report.chains for s in chain if s.step == Step.TLS]
        if not tls_steps or any(s.ok for s in tls_steps):
            return
        if any(s.result in ("tls_cert_invalid", "tls_hostname_mismatch") for s in tls_steps):
            dns_step.result = "dns_inconsistent"
            dns_step.detail = (
                f"test answers {', '.join(tested)} share nothing with the control resolver's "
                f"({', '.join(control)}) and fail TLS validation for the name"
            )

    async def probe(self, target: TargetConfig) -> TargetReport:
        """Run the whole chain for one target."""
        report = TargetReport(target=target, verdict="inconclusive")
        host = target.hostname
        control: list[str] = []
        try:
            ipaddress.ip_address(host)
            addresses: list[str] | None = [host]
        except ValueError:
            addresses, control = await self._resolve(target, report)
        if addresses is None:
            report.chains.append([skipped(s, None, "dns failed") for s in steps_after_dns(target)])
        else:
            picked = _interleave(addresses, self.config.agent.max_addresses)
            report.chains = list(
                await asyncio.gather(*(self._address_chain(target, a) for a in picked))
            )
            if report.dns and target.uses_tls:
                self._check_consistency(report, control)
        report.verdict = chain_verdict(report.deciding_steps)
        return report

    async def aclose(self) -> None:
        """Release the resolvers' connection pools."""
        await self.test_dns.aclose()
        if self.control_dns is not None:
            await self.control_dns.aclose()
