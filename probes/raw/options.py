"""The raw probes' options and their defaults, in one place (scapy-free, so that the agent's
config can take its defaults from here without loading scapy)."""

from __future__ import annotations

from dataclasses import dataclass

from probes.browser import CONTROL_NAME

DEFAULT_MAX_TTL = 16
DEFAULT_TIMEOUT = 2.0
DEFAULT_GLOBAL_RATE = 20.0
DEFAULT_TARGET_RATE = 5.0


@dataclass(frozen=True, slots=True)
class RawOptions:
    """How the raw probes of one agent run: rates (probe packets per second, per target
    address and for the agent), trace depth and repeats, each probe's wait, and the control
    name of the traces and the DNS fingerprint's reference query."""

    rate_per_second: float = DEFAULT_TARGET_RATE
    global_rate_per_second: float = DEFAULT_GLOBAL_RATE
    max_ttl: int = DEFAULT_MAX_TTL
    repeats: int = 3
    timeout: float = DEFAULT_TIMEOUT
    control_sni: str = CONTROL_NAME
    control_host: str = CONTROL_NAME
