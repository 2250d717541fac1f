"""`raw`: the opt-in raw-packet probes (docs/raw.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from agent.config.types import Duration, Strict
from probes.raw.options import RawOptions

DEFAULTS = RawOptions()


class RawSection(Strict):
    """Raw-packet probes (docs/raw.md): off unless the volunteer opts in; need CAP_NET_RAW.

    Rates are probe packets per second, per target address and for the whole agent.
    """

    enabled: bool = False
    trace: bool = True  # localize the censor for targets that are not reachable
    fingerprint: bool = True  # injected or genuine, for resets and injected DNS answers
    icmp_echo: bool = False  # an ICMP echo step for `tcp:` targets
    rate_per_second: Annotated[float, Field(gt=0, le=100)] = DEFAULTS.rate_per_second
    global_rate_per_second: Annotated[float, Field(gt=0, le=1000)] = DEFAULTS.global_rate_per_second
    max_ttl: Annotated[int, Field(ge=1, le=64)] = DEFAULTS.max_ttl
    repeats: Annotated[int, Field(ge=1, le=10)] = DEFAULTS.repeats
    timeout: Duration = DEFAULTS.timeout
    # Also the SNI of the ordinary SNI re-check (measure/followups/sni.py), raw probes or not.
    control_sni: str = DEFAULTS.control_sni
    control_host: str = DEFAULTS.control_host

    def options(self) -> RawOptions:
        """The section as the raw probes take it."""
        return RawOptions(
            rate_per_second=self.rate_per_second,
            global_rate_per_second=self.global_rate_per_second,
            max_ttl=self.max_ttl,
            repeats=self.repeats,
            timeout=self.timeout,
            control_sni=self.control_sni,
            control_host=self.control_host,
        )

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 30:
            raise ValueError("must be more than 0s and at most 30s")
        return value
