"""The fingerprint database: OONI's blocking fingerprints (ooni/blocking-fingerprints) read from
their CSV files, and the JSON files `scripts/refresh-fingerprints` writes from them.

OONI's columns: name, scope, other_names, location_found (`body`, `header.<name>`, `dns`),
pattern_type (`full`, `prefix`, `contains`, `regexp`), pattern, confidence_no_fp,
expected_countries, source, exp_url, notes. Scope `fp` marks a known ordinary page (a false
positive), which is kept as such: it never names a blockpage and overrides the ones it contains.
Nothing here touches the network; the files are local paths.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from agent.csv_rows import csv_rows, wrong_width
from probes.blockpages import Fingerprint, check_pattern
from probes.bogons import BogonFilter
from probes.dns_fingerprints import DnsFingerprint, normalise

COLUMNS = ("name", "location_found", "pattern_type", "pattern", "scope")
OONI_HTTP_CSV = "fingerprints_http.csv"
OONI_DNS_CSV = "fingerprints_dns.csv"
HTTP_FILE = "fingerprints/http.json"
DNS_FILE = "fingerprints/dns.json"


class FingerprintFileError(ValueError):
    """A fingerprint file that cannot be used; the message names the file and line."""


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows with the line each starts on; the header must hold OONI's columns."""
    try:
        rows = csv_rows(path, COLUMNS)
    except ValueError as exc:
        raise FingerprintFileError(str(exc)) from None
    for line, row in rows:
        if wrong_width(row):
            raise FingerprintFileError(f"{path}:{line}: wrong number of fields")
    return [(line, {k: v or "" for k, v in row.items()}) for line, row in rows]


def _countries(row: dict[str, str]) -> str | None:
    return row.get("expected_countries", "").replace(" ", "") or None


def read_ooni_http(path: Path) -> list[Fingerprint]:
    """OONI's HTTP fingerprints (`fingerprints_http.csv`), in file order."""
    out: list[Fingerprint] = []
    seen: set[str] = set()
    for line, row in _rows(path):
        where = f"{path}:{line}"
        name, location = row["name"], row["location_found"]
        if name in seen:
            raise FingerprintFileError(f"{where}: fingerprint {name!r} listed twice")
        seen.add(name)
        if location == "body":
            ours = "body"
        elif location.startswith("header.") and location != "header.":
            ours = "header:" + location.removeprefix("header.").lower()
        else:
            raise FingerprintFileError(f"{where}: location_found {location!r} is not HTTP")
        try:
            check_pattern(row["pattern"], row["pattern_type"])
        except ValueError as exc:
            raise FingerprintFileError(f"{where}: {name}: {exc}") from None
        out.append(
            Fingerprint(
                name=name,
                pattern=row["pattern"],
                location=ours,
                pattern_type=row["pattern_type"],
                country=_countries(row),
                source=row.get("source") or None,
                false_positive=row["scope"] == "fp",
            )
        )
    return out


def read_ooni_dns(path: Path) -> list[DnsFingerprint]:
    """OONI's DNS fingerprints (`fingerprints_dns.csv`): every one a `full` match on an
    answer. Left out: the false positives (scope `fp`), and the vague ones (scope `vbw`, e.g.
    0.0.0.0) in bogon space, which the bogon rule already reports without pinning the answer
    on one country's censor."""
    bogons = BogonFilter()
    out: list[DnsFingerprint] = []
    for line, row in _rows(path):
        where = f"{path}:{line}"
        if row["location_found"] != "dns" or row["pattern_type"] != "full":
            raise FingerprintFileError(f"{where}: not a `dns`, `full` fingerprint")
        if not row["pattern"]:
            raise FingerprintFileError(f"{where}: empty pattern")
        answer = normalise(row["pattern"])
        vague_bogon = row["scope"] == "vbw" and _is_bogon(bogons, answer)
        if row["scope"] == "fp" or vague_bogon:
            continue
        out.append(DnsFingerprint(row["name"], answer, _countries(row), row.get("source") or None))
    return out


def _is_bogon(bogons: BogonFilter, answer: str) -> bool:
    try:
        return bogons.is_bogon(answer)
    except ValueError:
        return False  # a name, not an address


def write_database(folder: Path, http: list[Fingerprint], dns: list[DnsFingerprint]) -> None:
    """Write the JSON files the agent loads (`fingerprints/http.json`, `fingerprints/dns.json`
    under the shipped config folder `folder`)."""
    for name, entries in ((HTTP_FILE, http), (DNS_FILE, dns)):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{k: v for k, v in asdict(e).items() if v not in (None, False)} for e in entries]
        text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
        path.write_text(text, encoding="utf-8")


def _json_rows(path: Path) -> list[dict[str, object]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FingerprintFileError(f"{path}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise FingerprintFileError(f"{path}: not a list of fingerprints")
    return rows


def load_http(path: Path) -> list[Fingerprint]:
    """The HTTP fingerprints of a database file written by `write_database`."""
    out = []
    for i, row in enumerate(_json_rows(path), start=1):
        try:
            fp = Fingerprint(**row)  # type: ignore[arg-type]
            check_pattern(fp.pattern, fp.pattern_type)
        except (TypeError, ValueError) as exc:
            raise FingerprintFileError(f"{path}: entry {i}: {exc}") from None
        out.append(fp)
    return out


def load_dns(path: Path) -> list[DnsFingerprint]:
    """The DNS fingerprints of a database file written by `write_database`."""
    try:
        return [DnsFingerprint(**row) for row in _json_rows(path)]  # type: ignore[arg-type]
    except TypeError as exc:
        raise FingerprintFileError(f"{path}: {exc}") from None
