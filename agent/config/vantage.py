"""`vantage`: the vantage's own health checks (canary group, TCP canary, NXDOMAIN probe)."""

from __future__ import annotations

import re

from pydantic import field_validator

from agent.config.types import IpPort, RequiredGroupName, Strict


class VantageSection(Strict):
    """The vantage's own health checks, each cycle. Off unless set (the shipped default
    config sets them): they contact addresses of their own."""

    canary_group: RequiredGroupName = "canary"
    # An address that must never answer (RFC 5737 documentation space in the shipped config):
    # if a connection to it succeeds, a middlebox accepts everything.
    tcp_canary: IpPort | None = None
    # A domain under which a random name cannot exist: an address back means the test
    # resolver rewrites NXDOMAIN.
    nxdomain_probe_suffix: str | None = None

    @field_validator("nxdomain_probe_suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?", value):
            raise ValueError(f"{value!r} is not a domain name")
        return value
