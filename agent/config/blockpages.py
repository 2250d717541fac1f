"""`blockpages`: the fingerprints that recognise a censor's block page."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator

from agent.config.types import LabelName, Strict
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
