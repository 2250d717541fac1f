"""`raw`: the opt-in raw-packet probes (docs/raw.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from agent.config.types import Duration, Strict


class RawSection(Strict):
    """Raw-packet probes (docs/raw.md): off unless the volunteer opts in; need CAP_NET_RAW.

    Rates are probe packets per second, per target address and for the whole agent.
    """

    enabled: bool = False
    trace: bool = True  # localize the censor for targets that are not reachable
    fingerprint: bool = True  # injected or genuine, for resets and injected DNS answers
    icmp_echo: bool = False  # an ICMP echo step for `tcp:` targets
    rate_per_second: Annotated[float, Field(gt=0, le=100)] = 5.0
    global_rate_per_second: Annotated[float, Field(gt=0, le=1000)] = 20.0
    max_ttl: Annotated[int, Field(ge=1, le=64)] = 16
    repeats: Annotated[int, Field(ge=1, le=10)] = 3
    timeout: Duration = 2.0
    control_sni: str = "www.example.org"
    control_host: str = "www.example.org"

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 30:
            raise ValueError("must be more than 0s and at most 30s")
        return value
