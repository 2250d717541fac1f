"""`blockpages`: the fingerprints that recognise a censor's block page."""

from __future__ import annotations

from pydantic import field_validator

from agent.config.types import LabelName, Regex, Strict
from probes.blockpages import check_location


class BlockpageConfig(Strict):
    """A blockpage fingerprint: a regex over the status line, headers and body."""

    name: LabelName
    pattern: Regex
    location: str = "any"
    country: str | None = None
    source: str | None = None

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value)
