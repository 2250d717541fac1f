"""`prefixes`: address ranges whose reachable fraction is sampled each cycle (docs/prefixes.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from agent.config.types import LabelName, Network, Strict
from measure.plan import MAX_SAMPLE, Method


class PrefixConfig(Strict):
    """A prefix whose reachable fraction is estimated from a fresh sample every cycle."""

    name: LabelName
    cidr: Network
    port: Annotated[int, Field(ge=1, le=65535)] = 443
    sample: Annotated[int, Field(ge=1, le=MAX_SAMPLE)] = 16
    # `syn`: a stateless SYN scan, off by default; needs CAP_NET_RAW (docs/prefixes.md).
    method: Method = "connect"
