"""`targets_from`: targets taken from Citizen Lab test lists (github citizenlab/test-lists).

A list is a CSV file with the columns url, category_code, category_description, date_added,
source, notes (`lists/global.csv`, one file per country). Each source names one list and which
categories of it to test: which categories a volunteer tests is a safety decision
(docs/volunteers.md), so an unknown code in `categories` or `exclude_categories` is an error,
never a filter that silently lets everything through.

A row becomes a URL target named from its URL alone (so a name does not change when the list
does) with its category code as the target's `group`. The same URL from several lists, or
from `targets`, is probed once: the explicit target, else the first list's row, wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from agent.config.types import ExistingFile, Strict
from agent.csv_rows import csv_rows, wrong_width

COLUMNS = ("url", "category_code")
# Citizen Lab's category codes (lists/00-LEGEND-new_category_codes.csv).
CATEGORIES = frozenset(
    [
        "ALDR",
        "REL",
        "PORN",
        "PROV",
        "POLR",
        "HUMR",
        "ENV",
        "MILX",
        "HATE",
        "NEWS",
        "XED",
        "PUBH",
        "GMB",
        "ANON",
        "DATE",
        "GRP",
        "LGBT",
        "FILE",
        "HACK",
        "COMT",
        "MMED",
        "HOST",
        "SRCH",
        "GAME",
        "CULTR",
        "ECON",
        "GOVT",
        "COMM",
        "CTRL",
        "IGO",
        "MISC",
    ]
)
# Where the error message stops listing bad rows.
MAX_REPORTED = 20


def _codes(value: list[str]) -> list[str]:
    codes = [c.strip().upper() for c in value]
    unknown = [c for c in codes if c not in CATEGORIES]
    if unknown:
        known = " ".join(sorted(CATEGORIES))
        raise ValueError(f"unknown category {', '.join(unknown)} (Citizen Lab's codes: {known})")
    return codes


class TestListSource(Strict):
    """One test list and which of its rows to probe."""

    test_list: ExistingFile
    categories: list[str] = []
    exclude_categories: list[str] = []
    limit: Annotated[int, Field(ge=1)] | None = None

    @field_validator("categories", "exclude_categories")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return _codes(value)


@dataclass(frozen=True, slots=True)
class ListedUrl:
    """One usable row of a test list."""

    url: str
    category: str
    where: str  # file:line, for messages


def normalise_url(url: str) -> str:
    """The URL as the same site's other spellings write it: scheme and host in lowercase, an
    empty path as `/`."""
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    return parts._replace(
        scheme=parts.scheme.lower(), netloc=netloc, path=parts.path or "/"
    ).geturl()


def target_name(url: str) -> str:
    """A stable target name for `url`: its host for an https site's front page, else the host
    and a short hash of the whole URL (a label value: letters, digits, `.`, `-`, `:`)."""
    normal = normalise_url(url)
    parts = urlsplit(normal)
    host = (parts.hostname or "").encode("idna").decode("ascii")[:100]
    if parts.scheme == "https" and parts.path == "/" and not parts.query and parts.port is None:
        return host
    return f"{host}-{hashlib.sha256(normal.encode()).hexdigest()[:8]}"


def _check_row(row: dict[str, str | None]) -> str | None:
    """Why a row cannot be a target, or None."""
    if wrong_width(row):
        return "wrong number of fields"
    url, category = (row["url"] or "").strip(), (row["category_code"] or "").strip()
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"url {url!r} holds whitespace or control characters"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        return f"url {url!r} has a bad port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url {url!r} is not an http(s)://host/... URL"
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return f"url {url!r} has a host that is no valid name"
    if not category.isalpha() or not category.isupper():
        return f"category_code {category!r} is not a code such as NEWS"
    return None


def read_test_list(path: Path) -> list[ListedUrl]:
    """The rows of a Citizen Lab test list; ValueError naming every bad row's file and line."""
    rows, bad = [], []
    for line, row in csv_rows(path, COLUMNS, " (not a test list)"):
        problem = _check_row(row)
        if problem is not None:
            bad.append(f"{path}:{line}: {problem}")
        else:
            url, code = row["url"] or "", row["category_code"] or ""
            rows.append(ListedUrl(url.strip(), code.strip(), f"{path}:{line}"))
    if bad:
        more = f"; and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise ValueError("; ".join(bad[:MAX_REPORTED]) + more)
    return rows


def chosen(source: TestListSource) -> list[ListedUrl]:
    """The rows of `source`'s list that its category filters and limit keep, in file order."""
    keep = set(source.categories)
    drop = set(source.exclude_categories)
    rows = [
        r
        for r in read_test_list(source.test_list)
        if (not keep or r.category in keep) and r.category not in drop
    ]
    return rows[: source.limit] if source.limit is not None else rows


def listed_targets(
    sources: Sequence[TestListSource], explicit: Iterable[tuple[str, str | None]]
) -> list[dict[str, object]]:
    """Target entries for the rows the sources keep, each URL once and none that `explicit`
    (the config's own targets, as (name, url)) already probes. ValueError when a derived name
    is an explicit target's name for another URL."""
    names: dict[str, str | None] = dict(explicit)
    seen = {normalise_url(url) for url in names.values() if url is not None}
    out: list[dict[str, object]] = []
    for source in sources:
        for row in chosen(source):
            normal = normalise_url(row.url)
            if normal in seen:
                continue
            seen.add(normal)
            name = target_name(row.url)
            if name in names:
                raise ValueError(f"{row.where}: target name {name!r} is already taken")
            names[name] = row.url
            out.append({"name": name, "url": row.url, "group": row.category})
    return out
