"""Blockpage fingerprints: regexes over an HTTP response's status line, headers and body."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LOCATIONS = ("any", "body", "headers")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One known blockpage. `location` narrows where `pattern` is searched:
    `any` (status line, headers and body), `body`, `headers`, or `header:<name>`."""

    name: str
    pattern: re.Pattern[str]
    location: str = "any"
    country: str | None = None
    source: str | None = None

    def matches(self, status_line: str, headers: Mapping[str, str], body: str) -> bool:
        """True if the fingerprint is found in the part of the response it looks at."""
        if self.location.startswith("header:"):
            value = headers.get(self.location.removeprefix("header:"))
            return value is not None and bool(self.pattern.search(value))
        header_text = "\r\n".join(f"{k}: {v}" for k, v in headers.items())
        text = {
            "body": body,
            "headers": header_text,
        }.get(self.location, f"{status_line}\r\n{header_text}\r\n\r\n{body}")
        return bool(self.pattern.search(text))


class BlockpageMatcher:
    """Matches responses against a set of fingerprints, the first match naming the page."""

    def __init__(self, fingerprints: Iterable[Fingerprint] = ()) -> None:
        self.fingerprints = tuple(fingerprints)

    def match(self, status_line: str, headers: Mapping[str, str], body: str) -> Fingerprint | None:
        """The first fingerprint that matches, or None."""
        for fp in self.fingerprints:
            if fp.matches(status_line, headers, body):
                return fp
        return None
