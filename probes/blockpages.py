"""Blockpage fingerprints: regexes over an HTTP response's status line, headers and body."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Where a fingerprint looks: everything, the body, the header block, or one named header.
LOCATIONS = ("any", "body", "headers")
_NAMED_HEADER = re.compile(r"header:[a-z0-9-]+")


def check_location(value: str) -> str:
    """`value` if it is a location a fingerprint can look at; ValueError otherwise."""
    if value not in LOCATIONS and not _NAMED_HEADER.fullmatch(value):
        raise ValueError("location is any, body, headers or header:<lowercase-name>")
    return value


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One known blockpage. `location` narrows where `pattern` is searched:
    `any` (status line, headers and body), `body`, `headers`, or `header:<name>`."""

    name: str
    pattern: re.Pattern[str]
    location: str = "any"
    country: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class _Texts:
    """A response's parts, each rendered once however many fingerprints look at it."""

    headers: Mapping[str, str]
    body: str
    header_text: str
    everything: str

    def at(self, location: str) -> str | None:
        if location.startswith("header:"):
            return self.headers.get(location.removeprefix("header:"))
        if location == "body":
            return self.body
        if location == "headers":
            return self.header_text
        return self.everything


class BlockpageMatcher:
    """Matches responses against a set of fingerprints, the first match naming the page."""

    def __init__(self, fingerprints: Iterable[Fingerprint] = ()) -> None:
        self.fingerprints = tuple(fingerprints)

    def match(self, status_line: str, headers: Mapping[str, str], body: str) -> Fingerprint | None:
        """The first fingerprint found in the part of the response it looks at, or None."""
        header_text = "\r\n".join(f"{k}: {v}" for k, v in headers.items())
        texts = _Texts(headers, body, header_text, f"{status_line}\r\n{header_text}\r\n\r\n{body}")
        for fp in self.fingerprints:
            text = texts.at(fp.location)
            if text is not None and fp.pattern.search(text):
                return fp
        return None
