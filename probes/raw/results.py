"""Typed results of the raw probes, and their JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["ok", "skipped", "error"]
Method = Literal["syn", "tls", "http"]
Verdict = Literal["injected", "genuine", "unknown"]

# What one TTL-limited probe got back.
TIME_EXCEEDED = "time_exceeded"  # ICMP time exceeded from a router on the path
UNREACHABLE = "unreachable"  # ICMP destination unreachable
SYNACK = "synack"  # the destination accepted the SYN
RST = "rst"  # a TCP reset, from the destination or forged on the path
FIN = "fin"  # the connection was closed (EOF) after the trigger
DATA = "data"  # bytes in answer to the trigger (ServerHello, HTTP response, blockpage)
TIMEOUT = "timeout"  # nothing came back
HANDSHAKE_FAILED = "handshake_failed"  # tls/http: the TCP handshake before the trigger failed


@dataclass(frozen=True, slots=True)
class PacketEvidence:
    """The IP and TCP header facts of one received packet that say who may have sent it."""

    ttl: int
    ip_id: int
    window: int | None = None  # TCP only
    flags: str | None = None  # TCP only, scapy's spelling ("SA", "R", "RA")

    @property
    def initial_ttl(self) -> int:
        """The sender's likely initial TTL: the smallest usual one (32, 64, 128, 255) >= ttl."""
        return next(t for t in (32, 64, 128, 255) if self.ttl <= t)

    @property
    def hops(self) -> int:
        """How many routers the packet crossed, assuming `initial_ttl`."""
        return self.initial_ttl - self.ttl

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"ttl": self.ttl, "ip_id": self.ip_id, "hops": self.hops}
        if self.window is not None:
            out["window"] = self.window
        if self.flags is not None:
            out["flags"] = self.flags
        return out


@dataclass(frozen=True, slots=True)
class Hop:
    """One TTL of a trace: the response most repeats agreed on, and who sent it.

    `address` is the ICMP sender for `time_exceeded`/`unreachable`, the destination's address
    (as the packet claims) for a TCP answer, and None for `timeout`.
    """

    ttl: int
    address: str | None
    response: str
    agreeing: int
    probes: int

    def to_json(self) -> dict[str, object]:
        return {
            "ttl": self.ttl,
            "address": self.address,
            "response": self.response,
            "agreeing": self.agreeing,
            "probes": self.probes,
        }


@dataclass(frozen=True, slots=True)
class Trace:
    """Where on the path the trigger is stopped.

    `blocking_hop` is the first TTL at which the trigger was dropped or answered by someone
    other than the next router (a RST, a FIN, data) while the control probe got past; None
    when no hop was found (reachable, or the trace could not tell). `router` is the address
    that answered time-exceeded at that TTL in the control trace: the router at which, or just
    behind which, the censor sits. `control_hops` is empty for `syn` (no control exists).
    """

    status: Status
    method: Method
    address: str
    port: int
    blocking_hop: int | None = None
    router: str | None = None
    hops: tuple[Hop, ...] = ()
    control_hops: tuple[Hop, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        """The `trace` object of a target in `check --format json`."""
        return {
            "blocking_hop": self.blocking_hop,
            "method": self.method,
            "hops": [hop.to_json() for hop in self.hops],
            "control_hops": [hop.to_json() for hop in self.control_hops],
            "router": self.router,
            "status": self.status,
            "detail": self.detail,
        }


class _Json(Protocol):
    def to_json(self) -> dict[str, object]: ...


def _verdict_json(
    status: Status,
    verdict: Verdict,
    reference: PacketEvidence | None,
    detail: str,
    **evidence: tuple[_Json, ...],
) -> dict[str, object]:
    """The JSON of a fingerprint: its verdict, the reference packet and the suspect ones."""
    out: dict[str, object] = {
        "status": status,
        "verdict": verdict,
        "reference": reference.to_json() if reference else None,
    }
    out.update({key: [item.to_json() for item in items] for key, items in evidence.items()})
    out["detail"] = detail
    return out


@dataclass(frozen=True, slots=True)
class ResetFingerprint:
    """Was the RST that killed a connection sent by the server or forged on the path?

    `reference` is the SYN-ACK of the same server, `resets` every RST seen (injectors often
    send several).
    """

    status: Status
    verdict: Verdict
    address: str
    port: int
    reference: PacketEvidence | None = None
    resets: tuple[PacketEvidence, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return _verdict_json(
            self.status, self.verdict, self.reference, self.detail, resets=self.resets
        )


@dataclass(frozen=True, slots=True)
class DnsAnswerEvidence:
    """One DNS answer to the query: its addresses, IP header facts, and what they suggest."""

    addresses: tuple[str, ...]
    packet: PacketEvidence
    arrival_seconds: float  # after the query was sent
    verdict: Verdict

    def to_json(self) -> dict[str, object]:
        return {
            "addresses": list(self.addresses),
            **self.packet.to_json(),
            "arrival_seconds": round(self.arrival_seconds, 6),
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class DnsFingerprint:
    """The answers to one UDP DNS query, each compared with the resolver's own (reference)."""

    status: Status
    verdict: Verdict
    resolver: str
    name: str
    reference: PacketEvidence | None = None
    answers: tuple[DnsAnswerEvidence, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return _verdict_json(
            self.status, self.verdict, self.reference, self.detail, answers=self.answers
        )


@dataclass(frozen=True, slots=True)
class Echo:
    """ICMP echo: how many of `sent` requests were answered, the fastest round trip."""

    status: Status
    address: str
    sent: int = 0
    received: int = 0
    rtt_seconds: float | None = None
    reply: PacketEvidence | None = None
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "sent": self.sent,
            "received": self.received,
            "rtt_seconds": None if self.rtt_seconds is None else round(self.rtt_seconds, 6),
            "reply": self.reply.to_json() if self.reply else None,
            "detail": self.detail,
        }
