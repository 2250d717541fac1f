"""Blockpage fingerprints: patterns over an HTTP response's status line, headers and body.

The matching rules are OONI's (ooni/blocking-fingerprints): a pattern is `full` (the whole
text), `prefix`, `contains` or `regexp`, always case-sensitive, and a `header:<name>`
location reads the response's first header of that name. A fingerprint marked
`false_positive` describes an ordinary page (a hosting default, a CDN error): it never names a
blockpage, and it overrides the blockpage fingerprints whose text it contains, because the
known ordinary page is then the more specific explanation of the response.

Matching stays cheap however many fingerprints there are: per location, `full` patterns are a
dict lookup, `prefix` patterns one lookup per distinct prefix length, and every `contains`
pattern is found in one pass with an Aho-Corasick automaton. Only `regexp` patterns cost a
search each.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

# Where a fingerprint looks: everything, the body, the header block, or one named header.
LOCATIONS = ("any", "body", "headers")
PATTERN_TYPES = ("full", "prefix", "contains", "regexp")
_NAMED_HEADER = re.compile(r"header:[a-z0-9-]+")


def check_location(value: str) -> str:
    """`value` if it is a location a fingerprint can look at; ValueError otherwise."""
    if value not in LOCATIONS and not _NAMED_HEADER.fullmatch(value):
        raise ValueError("location is any, body, headers or header:<lowercase-name>")
    return value


def check_pattern(pattern: str, pattern_type: str) -> str:
    """`pattern` if it is usable as a `pattern_type` pattern; ValueError otherwise."""
    if pattern_type not in PATTERN_TYPES:
        raise ValueError(f"pattern_type is one of {', '.join(PATTERN_TYPES)}")
    if not pattern:
        raise ValueError("an empty pattern would match every response")
    if pattern_type == "regexp":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One known page. `location` narrows where `pattern` is looked for: `any` (status line,
    headers and body), `body`, `headers`, or `header:<name>`; `pattern_type` says how."""

    name: str
    pattern: str
    location: str = "any"
    pattern_type: str = "regexp"
    country: str | None = None
    source: str | None = None
    false_positive: bool = False

    def matches(self, text: str) -> bool:
        """Whether `text` (the part of a response at `location`) matches, by OONI's rules."""
        if self.pattern_type == "full":
            return text == self.pattern
        if self.pattern_type == "prefix":
            return text.startswith(self.pattern)
        if self.pattern_type == "contains":
            return self.pattern in text
        return re.search(self.pattern, text) is not None


def _overrides(fp: Fingerprint, blockpage: Fingerprint) -> bool:
    """Whether false-positive `fp` explains away a match of `blockpage`: same place, and the
    ordinary page's text holds the blockpage's (a regexp's reach cannot be compared)."""
    return (
        fp.location == blockpage.location
        and "regexp" not in (fp.pattern_type, blockpage.pattern_type)
        and blockpage.pattern in fp.pattern
    )


class _Index:
    """The fingerprints of one location, indexed by pattern type. Finds the positions (in
    the matcher's list) of every fingerprint that matches a text."""

    def __init__(self, entries: Sequence[tuple[int, Fingerprint]]) -> None:
        self.full: dict[str, list[int]] = defaultdict(list)
        self.prefixes: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.regexps: list[tuple[int, re.Pattern[str]]] = []
        contains: dict[str, list[int]] = defaultdict(list)
        for i, fp in entries:
            if fp.pattern_type == "full":
                self.full[fp.pattern].append(i)
            elif fp.pattern_type == "prefix":
                self.prefixes[len(fp.pattern)][fp.pattern].append(i)
            elif fp.pattern_type == "contains":
                contains[fp.pattern].append(i)
            else:
                self.regexps.append((i, re.compile(fp.pattern)))
        self.automaton: ahocorasick.Automaton | None = None
        if contains:
            self.automaton = ahocorasick.Automaton()
            for word, positions in contains.items():
                self.automaton.add_word(word, tuple(positions))
            self.automaton.make_automaton()

    def find(self, text: str) -> set[int]:
        found: set[int] = set(self.full.get(text, ()))
        for length, by_prefix in self.prefixes.items():
            found.update(by_prefix.get(text[:length], ()))
        if self.automaton is not None:
            for _end, positions in self.automaton.iter(text):
                found.update(positions)
        # One search each: a joined alternation measured slower (bench/blockpages.py), as it
        # loses each pattern's literal-prefix scan.
        found.update(i for i, regexp in self.regexps if regexp.search(text))
        return found


class BlockpageMatcher:
    """Matches responses against a set of fingerprints, the first blockpage in the list that
    matches (and that no matching false positive overrides) naming the page."""

    def __init__(self, fingerprints: Iterable[Fingerprint] = ()) -> None:
        self.fingerprints = tuple(fingerprints)
        blockpages = [(i, fp) for i, fp in enumerate(self.fingerprints) if not fp.false_positive]
        vetoes = (
            (i, frozenset(j for j, bp in blockpages if _overrides(fp, bp)))
            for i, fp in enumerate(self.fingerprints)
            if fp.false_positive
        )
        # A false positive that overrides nothing cannot change an answer: not looked for.
        self._vetoes = {i: vetoed for i, vetoed in vetoes if vetoed}
        by_location: dict[str, list[tuple[int, Fingerprint]]] = defaultdict(list)
        for i, fp in enumerate(self.fingerprints):
            if not fp.false_positive or i in self._vetoes:
                by_location[fp.location].append((i, fp))
        self._indexes = {location: _Index(entries) for location, entries in by_location.items()}

    def match(self, status_line: str, headers: Mapping[str, str], body: str) -> Fingerprint | None:
        """The first blockpage fingerprint found in the part of the response it looks at, or
        None. `headers` maps lowercase names to the first value of each."""
        texts = _texts(status_line, headers, body)
        found: set[int] = set()
        for location, index in self._indexes.items():
            text = texts(location)
            if text is not None:
                found |= index.find(text)
        vetoed = set().union(*(self._vetoes.get(i, ()) for i in found))
        named = [i for i in found - vetoed if not self.fingerprints[i].false_positive]
        return self.fingerprints[min(named)] if named else None


def _texts(status_line: str, headers: Mapping[str, str], body: str) -> Callable[[str], str | None]:
    """The text of a response at a location; the header block and the whole response are
    rendered only if some fingerprint looks there."""
    header_text: list[str] = []

    def block() -> str:
        if not header_text:
            header_text.append("\r\n".join(f"{k}: {v}" for k, v in headers.items()))
        return header_text[0]

    def at(location: str) -> str | None:
        if location == "body":
            return body
        if location.startswith("header:"):
            return headers.get(location.removeprefix("header:"))
        if location == "headers":
            return block()
        return f"{status_line}\r\n{block()}\r\n\r\n{body}"

    return at
