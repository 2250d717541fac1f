"""The DNS step: A and AAAA lookups through one resolver, classified.

Transports: `udp` (with an injection window), `tcp`, `dot` (dnspython) and `doh` (RFC 8484 over
aiohttp); `system` queries the nameservers of /etc/resolv.conf over UDP, so that the system
resolver gets the same taxonomy (NXDOMAIN vs no answer, injection) as an explicit one.

On-path injectors usually answer first, but not always, so over UDP the client keeps listening
for `injection_window` after the first answer; two or more differing answers to one query are
`dns_injected`. Which answer was forged is decided by content elsewhere, never by arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from probes.bogons import BogonFilter
from probes.dns_fingerprints import DnsFingerprints

if TYPE_CHECKING:
    import aiohttp
from probes.errors import Outcome, classify, client_errors, measure
from probes.results import DnsFacts, DnsQuery, DnsRecord, StepResult, format_endpoint
from probes.taxonomy import Code, Step

QTYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
RESOLV_CONF = "/etc/resolv.conf"
SYSTEM_PORT = 53
DOH_MAX_BYTES = 65535
# Answers kept per UDP query: enough to show injection, bounded against a flood.
MAX_RESPONSES = 16
TRANSPORTS = ("system", "udp", "tcp", "dot", "doh")
DEFAULT_PORTS = {"udp": 53, "tcp": 53, "dot": 853}
_RCODE_RESULTS = {
    dns.rcode.NXDOMAIN: Code.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: Code.DNS_SERVFAIL,
    dns.rcode.REFUSED: Code.DNS_REFUSED,
    dns.rcode.NOERROR: Code.DNS_NO_ANSWER,
}


class DnsProtocolError(Exception):
    """The resolver answered with something that is not a usable DNS response."""


@dataclass(frozen=True, slots=True)
class Resolver:
    """Where and how to ask: `type` is one of TRANSPORTS; `servers` are (ip, port) pairs;
    `url` is the DoH endpoint."""

    type: str
    servers: tuple[tuple[str, int], ...] = ()
    url: str | None = None
    server_name: str | None = None


@dataclass(slots=True)
class QueryOutcome:
    """Every response to one query (more than one means injection), or the error.

    `strays` counts datagrams that parsed as DNS but answer another query (a wrong
    transaction id or question, as sloppy injectors send): they are not answers, but they
    are evidence that something on the path forges DNS.
    """

    responses: list[dns.message.Message] = field(default_factory=list)
    error: BaseException | None = None
    strays: int = 0
    # The server that answered (or was asked last): `ip:port`, or the DoH URL.
    server: str | None = None


def _addresses(msg: dns.message.Message) -> list[str]:
    return [rdata.address for rrset in msg.answer if rrset.rdtype in QTYPES for rdata in rrset]


def _aliases(msg: dns.message.Message) -> list[str]:
    return [
        rdata.target.to_text() for rrset in msg.answer if rrset.rdtype == dns.rdatatype.CNAME
        for rdata in rrset
    ]  # fmt: skip


def _known_lie(
    answers: Iterable[str], known: DnsFingerprints
) -> tuple[Code, str, list[str]] | None:
    """A `dns_fingerprint` result if an answer (an address or a CNAME target) is a censor's
    known one. Checked before the bogon rule, so that a sinkhole in private space is named."""
    hit = known.match(answers)
    if hit is None:
        return None
    answer, fp = hit
    where = f", {fp.country}" if fp.country else ""
    return Code.DNS_FINGERPRINT, f"answer {answer} is {fp.name}{where}", []


def query_facts(qtype: int, outcome: QueryOutcome, hide_server: bool) -> DnsQuery:
    """One query's first answer as facts: rcode and address records with their TTLs."""
    first = outcome.responses[0] if outcome.responses else None
    records = () if first is None else tuple(
        DnsRecord(rdata.address, rrset.ttl)
        for rrset in first.answer if rrset.rdtype in QTYPES for rdata in rrset
    )  # fmt: skip
    return DnsQuery(
        qtype=dns.rdatatype.to_text(qtype),
        server=None if hide_server else outcome.server,
        rcode=None if first is None else first.rcode(),
        records=records,
    )


def _fingerprint(msg: dns.message.Message) -> tuple[int, frozenset[str]]:
    return msg.rcode(), frozenset(_addresses(msg))


def _render(msg: dns.message.Message) -> str:
    addresses = _addresses(msg)
    return ",".join(sorted(addresses)) if addresses else dns.rcode.to_text(msg.rcode())


def evaluate(
    outcomes: dict[int, QueryOutcome],
    bogons: BogonFilter,
    known: DnsFingerprints | None = None,
) -> tuple[Code, str, list[str]]:
    """Classify the outcomes of the A and AAAA queries: (code, detail, usable addresses).
    `known` holds the censors' known answers (DNS fingerprints).

    Pure, so that the rules can be tested without a network.
    """
    for qtype, outcome in outcomes.items():
        distinct = {_fingerprint(m): m for m in outcome.responses}
        if len(distinct) > 1:
            answers = " vs ".join(_render(m) for m in distinct.values())
            return Code.DNS_INJECTED, f"{dns.rdatatype.to_text(qtype)}: {answers}", []

    # dicts as ordered sets: the answers in the order the resolver gave them, once each
    answers: dict[str, None] = {}
    aliases: dict[str, None] = {}
    for outcome in outcomes.values():
        for msg in outcome.responses[:1]:
            answers.update(dict.fromkeys(_addresses(msg)))
            aliases.update(dict.fromkeys(_aliases(msg)))
    if known and (lie := _known_lie([*answers, *aliases], known)) is not None:
        return lie
    addresses = list(answers)
    if addresses:
        bad = [a for a in addresses if bogons.is_bogon(a)]
        if bad:
            return Code.DNS_BOGON, f"answer in bogon space: {', '.join(bad)}", []
        return Code.OK, ", ".join(addresses), addresses

    responses = [o.responses[0] for o in outcomes.values() if o.responses]
    errors = [o.error for o in outcomes.values() if not o.responses and o.error is not None]
    # An empty NOERROR to one query says nothing when the other was never answered: "no
    # answer arrived" is not "the name has no address" (a lost A answer beside an empty
    # AAAA answer is a timeout). NXDOMAIN, SERVFAIL and REFUSED speak for the whole name.
    rcodes = [m.rcode() for m in responses]
    decisive = [r for r in rcodes if r != dns.rcode.NOERROR]
    if decisive or (rcodes and not errors):
        rcode = decisive[0] if decisive else rcodes[0]
        return _RCODE_RESULTS.get(rcode, Code.DNS_ERROR), dns.rcode.to_text(rcode), []
    if errors:
        code, detail = classify(Step.DNS, errors[0])
        return code, detail, []
    return Code.DNS_ERROR, "no query was sent", []


class _UdpCollector(asyncio.DatagramProtocol):
    """Collects every valid response to one query until told to stop."""

    def __init__(self, query: dns.message.Message) -> None:
        self.query = query
        self.responses: list[dns.message.Message] = []
        self.strays = 0
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            msg = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # garbage on our port is not an answer; keep waiting
        if not self.query.is_response(msg):
            self.strays += 1
            return
        if len(self.responses) >= MAX_RESPONSES:
            return  # two differing ones already prove injection; a flood costs no memory
        self.responses.append(msg)
        if not self.first.done():
            self.first.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.first.done():
            self.first.set_exception(exc)


def resend_interval(timeout: float) -> float:
    """How often an unanswered UDP query is sent again: about every second, as stub
    resolvers do, and at least three times within the step's timeout."""
    return min(1.0, timeout / 3)


async def _udp(
    query: dns.message.Message,
    server: tuple[str, int],
    timeout: float,
    window: float,
    limiter: AbstractAsyncContextManager[object],
) -> QueryOutcome:
    loop = asyncio.get_running_loop()
    wire = query.to_wire()
    # The limiter (the agent's concurrency slot) is held while waiting for an answer, not
    # while merely listening for late injected ones: that window is passive, and holding a
    # slot through it would cost every cycle ceil(targets / concurrency) windows.
    async with limiter:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _UdpCollector(query), remote_addr=server
        )
        try:
            async with asyncio.timeout(timeout):
                # One lost datagram must not read as a dead resolver: send again until
                # something answers (the same id, so a late first answer still counts).
                while not proto.first.done():
                    transport.sendto(wire)
                    await asyncio.wait({proto.first}, timeout=resend_interval(timeout))
                proto.first.result()
        except BaseException:
            transport.close()
            raise
    try:
        # Keep listening: a forged answer may arrive before or after the genuine one.
        await asyncio.sleep(window)
        return QueryOutcome(list(proto.responses), strays=proto.strays)
    finally:
        transport.close()


def _parse_doh(body: bytes, query: dns.message.Message) -> dns.message.Message:
    try:
        msg = dns.message.from_wire(body)
    except dns.exception.DNSException as exc:
        raise DnsProtocolError(f"DoH answer is not a DNS message: {exc}") from exc
    if not query.is_response(msg):
        raise DnsProtocolError("DoH answer does not match the query")
    return msg


# The system resolver's servers asked at most, as the C library's stub resolver asks.
MAXNS = 3


class DnsClient:
    """Sends A/AAAA queries through one configured resolver."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        timeout: float,
        injection_window: float = 0.5,
        ssl_context: object | None = None,
        limiter: AbstractAsyncContextManager[object] | None = None,
        fingerprints: DnsFingerprints | None = None,
    ) -> None:
        """`limiter` bounds queries in flight (the agent passes its concurrency semaphore);
        `fingerprints` are the censors' known answers, named as `dns_fingerprint`."""
        self.limiter = limiter if limiter is not None else contextlib.nullcontext()
        self.fingerprints = fingerprints
        self.resolver = resolver
        self.timeout = timeout
        self.injection_window = injection_window
        # One server's share of the step: the query's own timeout, a TCP retry after
        # truncation, the injection window. The step's deadline is one share per server.
        self.per_server = 2 * timeout + injection_window + 0.5
        count = MAXNS if resolver.type == "system" else max(1, len(resolver.servers))
        self.step_timeout = count * self.per_server
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _servers(self) -> Sequence[tuple[str, int]]:
        if self.resolver.type == "system":
            conf = dns.resolver.Resolver(filename=RESOLV_CONF)
            return [(str(ns), SYSTEM_PORT) for ns in conf.nameservers[:MAXNS]]
        return self.resolver.servers

    async def _doh(self, query: dns.message.Message) -> list[dns.message.Message]:
        if self._session is None:
            import aiohttp  # here: only DoH needs it, and it costs a process 13 MiB

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True, limit=16)
            )
        headers = {"content-type": "application/dns-message", "accept": "application/dns-message"}
        assert self.resolver.url is not None
        async with self._session.post(
            self.resolver.url, data=query.to_wire(), headers=headers, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise DnsProtocolError(f"DoH server answered HTTP {resp.status}")
            body = await resp.content.read(DOH_MAX_BYTES + 1)
            if len(body) > DOH_MAX_BYTES:
                raise DnsProtocolError("DoH answer larger than a DNS message can be")
        return [_parse_doh(body, query)]

    async def _query_once(
        self, query: dns.message.Message, server: tuple[str, int] | None
    ) -> QueryOutcome:
        kind = self.resolver.type
        if kind not in ("udp", "system"):
            async with self.limiter:
                return QueryOutcome(await self._stream_query(query, server))
        assert server is not None
        outcome = await _udp(query, server, self.timeout, self.injection_window, self.limiter)
        if any(m.flags & dns.flags.TC for m in outcome.responses):
            # A truncated answer is retried over TCP, as resolvers do; answers that were
            # not truncated stay, so a forged UDP answer still shows as injection.
            async with self.limiter:
                full = await dns.asyncquery.tcp(
                    query, server[0], timeout=self.timeout, port=server[1]
                )
            kept = [m for m in outcome.responses if not m.flags & dns.flags.TC]
            outcome.responses = [*kept, full]
        return outcome

    async def _stream_query(
        self, query: dns.message.Message, server: tuple[str, int] | None
    ) -> list[dns.message.Message]:
        kind = self.resolver.type
        if kind == "doh":
            return await self._doh(query)
        assert server is not None
        host, port = server
        if kind == "tcp":
            return [await dns.asyncquery.tcp(query, host, timeout=self.timeout, port=port)]
        if kind == "dot":
            return [
                await dns.asyncquery.tls(
                    query,
                    host,
                    timeout=self.timeout,
                    port=port,
                    ssl_context=self.ssl_context,
                    server_hostname=self.resolver.server_name or host,
                )
            ]
        raise ValueError(f"unknown resolver type {kind!r}")

    async def query(self, name: str, qtype: int) -> QueryOutcome:
        """Ask every server in turn until one answers; record all answers or the last error."""
        query = dns.message.make_query(name, qtype)
        servers: Sequence[tuple[str, int] | None] = (
            [None] if self.resolver.type == "doh" else self._servers()
        )
        outcome = QueryOutcome()
        for server in servers:
            outcome.server = self.resolver.url if server is None else format_endpoint(*server)
            try:
                async with asyncio.timeout(self.per_server):
                    answered = await self._query_once(query, server)
                answered.server = outcome.server
                return answered
            except (
                OSError,
                TimeoutError,
                dns.exception.DNSException,
                *client_errors(),
                DnsProtocolError,
            ) as exc:
                outcome.error = exc
        if outcome.error is None:
            outcome.error = DnsProtocolError("no nameserver configured")
        return outcome

    async def resolve(self, name: str, bogons: BogonFilter) -> StepResult:
        """The DNS step: A and AAAA for `name`, classified; the usable addresses are in the
        result's `DnsFacts`. The step's deadline gives every server its share in turn."""

        async def work() -> Outcome:
            results = await asyncio.gather(*(self.query(name, q) for q in QTYPES))
            code, detail, addresses = evaluate(
                dict(zip(QTYPES, results, strict=True)), bogons, self.fingerprints
            )
            strays = sum(r.strays for r in results)
            own = self.resolver.type == "system"  # the volunteer's own network's server
            queries = tuple(query_facts(q, r, own) for q, r in zip(QTYPES, results, strict=True))
            facts = DnsFacts(self.resolver.type, tuple(addresses), strays, queries)
            return Outcome(code, detail, facts)

        return await measure(Step.DNS, None, self.step_timeout, work)

    async def aclose(self) -> None:
        """Release the DoH connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
