"""`agent`: who this vantage is, how it probes and where it serves its metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.types import (
    AsNumber,
    CountryCode,
    Duration,
    ExistingFile,
    IpPort,
    LabelName,
    Strict,
    greater_than_zero,
    split_host_port,
)
from measure.plan import DEFAULT_SEED, DEFAULT_SYN_RATE
from probes.http import DEFAULT_MAX_BODY

DEFAULT_PORT = 9787
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"


class AgentSection(Strict):
    """Who this vantage is and how it probes."""

    vantage: LabelName = "unnamed"
    role: Literal["test", "control"] = "test"
    country: CountryCode = ""
    asn: AsNumber = ""
    listen: IpPort | None = DEFAULT_LISTEN
    interval: Duration = 60.0
    timeout: Duration = 5.0
    jitter: Duration | None = None
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 64
    max_addresses: Annotated[int, Field(ge=1, le=32)] = 4
    address_limit: Annotated[int, Field(ge=1, le=64)] = 8
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = DEFAULT_MAX_BODY
    # Shared by every vantage whose prefix samples are compared (docs/prefixes.md).
    prefix_seed: Annotated[str, Field(min_length=1, max_length=256)] = DEFAULT_SEED
    # SYNs per second of the prefixes sampled by `method: syn`, all of them together.
    prefix_syn_rate: Annotated[float, Field(gt=0, le=100_000)] = DEFAULT_SYN_RATE
    # Serving beyond loopback needs web_config (TLS and/or basic auth, agent/config/web.py) or
    # this explicit opt-out; the rule is enforced at start by web.listen_policy.
    web_config: ExistingFile | None = None
    insecure_listen: bool = False

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        return greater_than_zero(value)

    @model_validator(mode="after")
    def _limits(self) -> AgentSection:
        if self.address_limit < self.max_addresses:
            raise ValueError(
                f"address_limit ({self.address_limit}) is below max_addresses "
                f"({self.max_addresses}): the first batch alone is larger"
            )
        return self

    @model_validator(mode="after")
    def _timeout_fits(self) -> AgentSection:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) is longer than interval ({self.interval:g}s)"
            )
        return self

    @property
    def effective_jitter(self) -> float:
        """How far target starts are spread in a cycle: jitter, or a tenth of the interval."""
        return self.jitter if self.jitter is not None else min(self.interval / 10, 30.0)

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return split_host_port(self.listen) if self.listen else None
