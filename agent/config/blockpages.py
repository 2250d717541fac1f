"""`blockpages`: the fingerprints that recognise a censor's block page; `fingerprints`: where
OONI's fingerprint database is, when it is not installed with the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationInfo, field_validator

from agent.config.types import LabelName, Strict, relative_to_config
from agent.fingerprint_db import OONI_DNS_CSV, OONI_HTTP_CSV, read_ooni_dns, read_ooni_http
from probes.blockpages import check_location, check_pattern


class BlockpageConfig(Strict):
    """A blockpage fingerprint, matched as OONI matches its own: `pattern_type` full, prefix,
    contains or regexp (the default), case-sensitive, at `location`."""

    name: LabelName
    # Before `pattern`, whose check depends on it.
    pattern_type: Literal["full", "prefix", "contains", "regexp"] = "regexp"
    pattern: str
    location: str = "any"
    country: str | None = None
    source: str | None = None
    # A known ordinary page: never a blockpage; overrides the fingerprints whose text it holds.
    false_positive: bool = False

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str, info: ValidationInfo) -> str:
        return check_pattern(value, info.data.get("pattern_type", "regexp"))

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value)


class FingerprintsSection(Strict):
    """`ooni`: a local copy of ooni/blocking-fingerprints (a folder holding its
    fingerprints_http.csv and fingerprints_dns.csv), used instead of the installed database."""

    ooni: Path

    @field_validator("ooni")
    @classmethod
    def _readable(cls, value: Path, info: ValidationInfo) -> Path:
        folder = relative_to_config(value, info)
        # Read once here so that a bad row is a config error naming its file and line.
        read_ooni_http(folder / OONI_HTTP_CSV)
        read_ooni_dns(folder / OONI_DNS_CSV)
        return folder
