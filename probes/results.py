"""Typed, immutable results shared by every probe step.

A step's facts are typed per step (`DnsFacts`, `TlsFacts`, `HttpFacts`), so that what later
layers read (addresses, throughput ...) is a field, not a key in a dict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

from probes.taxonomy import SKIPPED, Code, Step, ooni_failure

# A field with this metadata is kept for the measurement log but left out of the step's JSON
# (bodies, headers and certificates would drown `check --format json`).
ARCHIVE_ONLY = {"step_json": False}


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One address record of an answer and its TTL."""

    address: str
    ttl: int


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One query of the DNS step as its server answered it (the first answer; more than one
    is injection, named in the step's code). `server` is the `ip:port` (or DoH URL) that
    answered or was asked last; None for the system resolver (the volunteer's own network's
    server is not recorded). `rcode` is None when no answer arrived."""

    qtype: str
    server: str | None = None
    rcode: int | None = None
    records: tuple[DnsRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsFacts:
    """What a resolver answered: its transport, the usable addresses, and how many datagrams
    answered another query (a wrong id or question: forged, and ignored for the verdict);
    `queries` are the A and AAAA queries one by one, with TTLs."""

    resolver: str
    addresses: tuple[str, ...] = ()
    stray_responses: int = 0
    queries: tuple[DnsQuery, ...] = field(default=(), metadata=ARCHIVE_ONLY)


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """Facts about a completed handshake; `certificate` is the peer's leaf in DER, `alpn`
    the protocol negotiated with ALPN (None when none was)."""

    version: str | None
    cipher: str | None
    cert_not_after: float | None = None
    alpn: str | None = None
    certificate: bytes | None = field(default=None, metadata=ARCHIVE_ONLY)


@dataclass(frozen=True, slots=True)
class HttpFacts:
    """What the HTTP exchange returned: the last hop's status, size and title. `redirects`
    are the hops followed after the first URL; `redirect` is one that could not be followed
    (its host did not resolve, or no resolver was given)."""

    status: int
    body_bytes: int
    bytes_per_second: float | None
    truncated: bool = False
    redirect: str | None = None
    redirects: tuple[str, ...] = ()
    title: str | None = None
    # The last hop's response headers as received, and the start of its decoded body (at
    # most BODY_SAMPLE characters: `body_bytes` says whether there was more).
    headers: tuple[tuple[str, str], ...] = field(default=(), metadata=ARCHIVE_ONLY)
    body: str = field(default="", metadata=ARCHIVE_ONLY)


Facts = DnsFacts | TlsFacts | HttpFacts


class Evidence(Protocol):
    """What a follow-up learned about a finished step (a dataclass). It shows in the step's
    JSON `data` under `key` (its fields, or its own `to_json()` when it has one), and
    `summary()`, when not None, extends the step's detail."""

    @property
    def key(self) -> str: ...

    def summary(self) -> str | None: ...


def evidence_json(evidence: Evidence) -> dict[str, object]:
    """One piece of evidence as JSON."""
    own = getattr(evidence, "to_json", None)
    return own() if callable(own) else facts_json(evidence)


def facts_json(facts: object) -> dict[str, object]:
    """A dataclass of facts or evidence as JSON, leaving out what is unset and what only the
    measurement log keeps."""
    if facts is None:
        return {}
    pairs = dataclasses.asdict(facts)  # type: ignore[call-overload]
    for f in dataclasses.fields(facts):  # type: ignore[arg-type]
        if not f.metadata.get("step_json", True):
            del pairs[f.name]
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in pairs.items()
        if v is not None and v is not False
    }


# The address families a target's addresses fall in, as reports and metrics name them.
FAMILIES = ("ipv4", "ipv6")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The address and port a step ran against. It is text (`ip:port`, IPv6 in brackets)
    only at output: `str(endpoint)`, the JSON and the sinks."""

    address: str
    port: int

    @property
    def family(self) -> str:
        """`ipv4` or `ipv6`."""
        return FAMILIES[1] if ":" in self.address else FAMILIES[0]

    def __str__(self) -> str:
        return format_endpoint(self.address, self.port)

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """The endpoint `text` (`ip:port` or `[ipv6]:port`) names: for results built from
        text (fixtures, other tools), never for the product's own results."""
        host, _, port = text.rpartition(":")
        return cls(host.removeprefix("[").removesuffix("]"), int(port))


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one probe step against one address.

    `result` is exactly one code of the taxonomy; `endpoint` is where it ran (None for DNS
    and for steps that never got an address); `detail` is a short human-readable explanation
    (never the volunteer's own address); `facts` holds what the step learned.
    """

    step: Step
    result: Code
    endpoint: Endpoint | None = None
    duration_seconds: float = 0.0
    detail: str = ""
    facts: Facts | None = None
    evidence: tuple[Evidence, ...] = ()
    # When the step started, on the monotonic clock (`time.perf_counter`): the measurement
    # log's per-operation times. None for a step that never ran.
    started: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # a result written by hand: `"192.0.2.1:443"`
            object.__setattr__(self, "endpoint", Endpoint.parse(self.endpoint))

    @property
    def ok(self) -> bool:
        return self.result == Code.OK

    @property
    def address(self) -> str | None:
        """The endpoint as text (`ip:port`), for output."""
        return None if self.endpoint is None else str(self.endpoint)

    @property
    def ooni_failure(self) -> str | None:
        return ooni_failure(self.result)

    @property
    def full_detail(self) -> str:
        """The detail, with what the follow-ups concluded about this step."""
        notes = [n for n in (e.summary() for e in self.evidence) if n]
        return "; ".join([self.detail, *notes]) if notes else self.detail

    def with_evidence(self, evidence: Evidence) -> StepResult:
        """This result with one more piece of evidence (results are immutable)."""
        return dataclasses.replace(self, evidence=(*self.evidence, evidence))

    def to_json(self) -> dict[str, object]:
        """The JSON shape of one step in `check --format json`."""
        out: dict[str, object] = {
            "step": self.step.value,
            "address": self.address,
            "result": self.result.value,
            "ooni_failure": self.ooni_failure,
            "duration_seconds": round(self.duration_seconds, 6),
            "detail": self.full_detail,
        }
        data = facts_json(self.facts)
        data.update({e.key: evidence_json(e) for e in self.evidence})
        if data:
            out["data"] = data
        return out


def format_endpoint(address: str, port: int) -> str:
    """`ip:port`, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def skipped(step: Step, endpoint: Endpoint | None, why: str) -> StepResult:
    """A step that did not run because an earlier one failed."""
    return StepResult(step=step, result=SKIPPED, endpoint=endpoint, detail=why)
