"""The zone model shared by the DNS and DoH servers: per-name behaviours and the replies they make.

A zone maps a name to a behaviour. In YAML (or a dict) a behaviour is one of:

    valid.test: [127.0.0.1, "::1"]          # answer with these A/AAAA addresses
    nx.test: nxdomain                       # also: servfail, refused, nodata, silent
    inj.test: {kind: inject, addresses: [127.0.0.1], forged: [127.0.0.5], delay: 50ms}
    slow.test: {kind: answer, addresses: [127.0.0.1], ttl: 5}
    odd.test: {kind: mismatched, addresses: [127.0.0.1], forged: [127.0.0.5]}
    stray.test: {kind: stray, addresses: [127.0.0.1], forged: [127.0.0.5]}
    big.test: {kind: truncate, addresses: [127.0.0.1]}
    "*": [127.0.0.9]                        # every name absent from the zone

`nodata` is NOERROR with an empty answer; `silent` never replies; `inject` sends a forged
reply at once and the genuine one `delay` later. `mismatched` does the same but the forged reply
carries another message ID (a blind spoofer's guess), which a client must ignore; `stray`
sends, as a sloppy injector does, a forged reply with a wrong message ID and one for a wrong
question name before the genuine one. `truncate` answers with the TC bit set and no records,
so that the client has to ask again over TCP. These are UDP behaviours: over a stream (TCP,
DoH), which carries one reply per query, the name gets its genuine answer. `oversized`
answers over UDP with every address even beyond the client's payload size (512 bytes without
EDNS), where `answer` would truncate (TC set, sections emptied) and a client should retry over
TCP.

Names absent from the zone get NXDOMAIN, or the behaviour of the `"*"` entry: an address list
there makes the server an NXDOMAIN-hijacking resolver, as ISPs run to show ads or blockpages.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import yaml

KINDS = (
    "answer", "nxdomain", "servfail", "refused", "nodata", "silent", "inject", "mismatched",
    "oversized", "stray", "truncate",
)  # fmt: skip
# Forged replies come first; the genuine one `delay` later (UDP only).
_FORGING = ("inject", "mismatched", "stray")
# The zone key whose behaviour applies to every name absent from the zone.
OTHERS = "*"
_RCODES = {
    "nxdomain": dns.rcode.NXDOMAIN,
    "servfail": dns.rcode.SERVFAIL,
    "refused": dns.rcode.REFUSED,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number or a `50ms` / `0.2s` string."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"bad duration {value!r}")
    number, unit = float(match[1]), match[2]
    return number / 1000 if unit == "ms" else number


@dataclass(frozen=True)
class Behaviour:
    """How the server treats queries for one name."""

    kind: str
    addresses: tuple[str, ...] = ()
    forged: tuple[str, ...] = ()
    delay: float = 0.05
    ttl: int = 60

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown behaviour {self.kind!r}; expected one of {KINDS}")
        for address in (*self.addresses, *self.forged):
            ipaddress.ip_address(address)
        if self.kind in _FORGING and set(self.forged) == set(self.addresses):
            raise ValueError(
                f"{self.kind} needs forged addresses that differ from the genuine ones"
            )

    @classmethod
    def parse(cls, spec: object) -> Behaviour:
        """A behaviour from its YAML form: a keyword, an address list, or a mapping."""
        if isinstance(spec, str):
            return cls(kind=spec)
        if isinstance(spec, list | tuple):
            return cls(kind="answer", addresses=tuple(str(a) for a in spec))
        if isinstance(spec, Mapping):
            fields = dict(spec)
            fields.setdefault("kind", "answer")
            for key in ("addresses", "forged"):
                fields[key] = tuple(str(a) for a in fields.get(key, ()))
            if "delay" in fields:
                fields["delay"] = parse_duration(fields["delay"])
            return cls(**fields)
        raise ValueError(f"bad behaviour {spec!r}")


@dataclass(frozen=True)
class Reply:
    """One reply to send: after `delay` seconds, `message`; `oversize` ignores the client's
    UDP payload size."""

    delay: float
    message: dns.message.Message
    oversize: bool = False


def _answer(query: dns.message.Message, addresses: Iterable[str], ttl: int) -> dns.message.Message:
    """A NOERROR reply carrying the addresses of the queried family (A or AAAA)."""
    response = dns.message.make_response(query)
    question = query.question[0]
    wanted = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
    matching = [a for a in addresses if ipaddress.ip_address(a).version == wanted]
    if matching:
        response.answer.append(
            dns.rrset.from_text_list(
                question.name, ttl, dns.rdataclass.IN, question.rdtype, matching
            )
        )
    return response


class Zone:
    """Name -> behaviour, plus the replies a query gets."""

    def __init__(self, behaviours: Mapping[str, Behaviour | object]) -> None:
        parsed = {
            name: b if isinstance(b, Behaviour) else Behaviour.parse(b)
            for name, b in behaviours.items()
        }
        self._others = parsed.pop(OTHERS, Behaviour(kind="nxdomain"))
        self._behaviours = {dns.name.from_text(name): b for name, b in parsed.items()}

    @classmethod
    def load(cls, path: str | Path) -> Zone:
        """A zone from a YAML mapping of name -> behaviour."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a zone is a mapping of name -> behaviour")
        return cls(data)

    def behaviour(self, name: dns.name.Name) -> Behaviour:
        """The behaviour for `name` (the `"*"` entry's, NXDOMAIN unless given, if unknown)."""
        return self._behaviours.get(name, self._others)

    def replies(self, query: dns.message.Message, *, datagram: bool) -> list[Reply]:
        """The replies to `query`, in sending order; `datagram` is True over UDP."""
        if len(query.question) != 1:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.FORMERR)
            return [Reply(0.0, response)]
        behaviour = self.behaviour(query.question[0].name)
        kind = behaviour.kind
        if kind == "silent":
            return []
        if kind in _RCODES:
            response = dns.message.make_response(query)
            response.set_rcode(_RCODES[kind])
            return [Reply(0.0, _authoritative(response))]
        genuine = _authoritative(_answer(query, behaviour.addresses, behaviour.ttl))
        if datagram and kind == "truncate":
            truncated = _authoritative(dns.message.make_response(query))
            truncated.flags |= dns.flags.TC
            return [Reply(0.0, truncated)]
        if datagram and kind in _FORGING:
            # Forged replies look like an on-path injector's: not authoritative, first.
            forged = [_answer(query, behaviour.forged, behaviour.ttl)]
            if kind != "inject":
                forged[0] = _wrong_id(forged[0])
            if kind == "stray":
                forged.append(_wrong_question(query, behaviour))
            return [Reply(0.0, f) for f in forged] + [Reply(behaviour.delay, genuine)]
        return [Reply(0.0, genuine, oversize=kind == "oversized")]


def _wrong_id(response: dns.message.Message) -> dns.message.Message:
    """`response` with another message ID: a client must not take it for its answer."""
    response.id ^= 0x5A5A
    return response


def _wrong_question(query: dns.message.Message, behaviour: Behaviour) -> dns.message.Message:
    """A forged reply with the query's ID but another name (`stray.` prepended) in question."""
    question = query.question[0]
    other = dns.message.make_query(
        dns.name.Name((b"stray", *question.name.labels)), question.rdtype
    )
    other.id = query.id
    return _answer(other, behaviour.forged, behaviour.ttl)


def _authoritative(response: dns.message.Message) -> dns.message.Message:
    response.flags |= dns.flags.AA
    return response
