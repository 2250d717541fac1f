"""DNS blocking fingerprints: the addresses and names censors' resolvers answer with.

A blockpage server's or sinkhole's address (or the CNAME an ISP's resolver points blocked
names to) names the lie by itself, with or without a control resolver. The list is OONI's
(ooni/blocking-fingerprints, `fingerprints_dns.csv`): every pattern there is a `full` match
on one answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


def normalise(answer: str) -> str:
    """An address in its canonical form, or a name in lowercase without the root dot."""
    try:
        return str(ipaddress.ip_address(answer))
    except ValueError:
        return answer.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class DnsFingerprint:
    """One known censor's answer: an IP address or a CNAME target."""

    name: str
    answer: str
    country: str | None = None
    source: str | None = None


class DnsFingerprints:
    """Looks answers up among the known ones; the first fingerprint listed for an answer
    names it."""

    def __init__(self, fingerprints: Iterable[DnsFingerprint] = ()) -> None:
        self.by_answer: dict[str, DnsFingerprint] = {}
        for fp in fingerprints:
            self.by_answer.setdefault(normalise(fp.answer), fp)

    def match(self, answers: Iterable[str]) -> tuple[str, DnsFingerprint] | None:
        """The first of `answers` that is a known censor's answer, with its fingerprint."""
        for answer in answers:
            fp = self.by_answer.get(normalise(answer))
            if fp is not None:
                return answer, fp
        return None

    def __bool__(self) -> bool:
        return bool(self.by_answer)
