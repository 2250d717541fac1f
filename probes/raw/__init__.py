"""Raw-packet probes (scapy): where on the path a target is blocked, and who sent the packet.

The only modules of the project that import scapy live here. Every function needs
CAP_NET_RAW; without it each returns a result whose status is `skipped` (see `capability`).
IPv4 only. The public API:

- `trace.trace(...)`: TTL-limited SYNs, TLS ClientHellos or HTTP requests; the blocking hop.
- `fingerprint_reset(...)`, `fingerprint_dns(...)`: was a RST or a DNS answer forged?
- `echo.echo(...)`: ICMP echo.
- `RawProber`, `reset_trigger`, `wants_reset_fingerprint`: what the agent runs after a
  target's ordinary steps (followup.py); `RawOptions`, their options (options.py).

The names load on first use (PEP 562), so that `probes.raw.options` and
`probes.raw.capability` can be imported, by the config for its defaults, without scapy.
`trace` and `echo` are taken from their modules: a lazy name cannot share a submodule's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "has_cap_net_raw": "capability",
    "fingerprint_dns": "fingerprint",
    "fingerprint_reset": "fingerprint",
    "RawProber": "followup",
    "reset_trigger": "followup",
    "wants_reset_fingerprint": "followup",
    "RawOptions": "options",
    "RateLimits": "ratelimit",
    "DnsAnswerEvidence": "results",
    "DnsFingerprint": "results",
    "Echo": "results",
    "Hop": "results",
    "Method": "results",
    "PacketEvidence": "results",
    "ResetFingerprint": "results",
    "Trace": "results",
}
__all__ = [
    "DnsAnswerEvidence",
    "DnsFingerprint",
    "Echo",
    "Hop",
    "Method",
    "PacketEvidence",
    "RateLimits",
    "RawOptions",
    "RawProber",
    "ResetFingerprint",
    "Trace",
    "fingerprint_dns",
    "fingerprint_reset",
    "has_cap_net_raw",
    "reset_trigger",
    "wants_reset_fingerprint",
]

if TYPE_CHECKING:
    from probes.raw.capability import has_cap_net_raw
    from probes.raw.fingerprint import fingerprint_dns, fingerprint_reset
    from probes.raw.followup import RawProber, reset_trigger, wants_reset_fingerprint
    from probes.raw.options import RawOptions
    from probes.raw.ratelimit import RateLimits
    from probes.raw.results import (
        DnsAnswerEvidence,
        DnsFingerprint,
        Echo,
        Hop,
        Method,
        PacketEvidence,
        ResetFingerprint,
        Trace,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'probes.raw' has no attribute {name!r}")
    return getattr(importlib.import_module(f"probes.raw.{home}"), name)
