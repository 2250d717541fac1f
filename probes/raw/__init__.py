"""Raw-packet probes (scapy): where on the path a target is blocked, and who sent the packet.

The only modules of the project that import scapy live here. Every function needs
CAP_NET_RAW; without it each returns a result whose status is `skipped` (see `capability`).
IPv4 only. The public API:

- `trace(...)`: TTL-limited SYNs, TLS ClientHellos or HTTP requests; the blocking hop.
- `fingerprint_reset(...)`, `fingerprint_dns(...)`: was a RST or a DNS answer forged?
- `echo(...)`: ICMP echo.
- `RawProber`, `trace_method`, `reset_trigger`, `wants_reset_fingerprint`: what the agent
  runs after a target's ordinary steps (followup.py).
"""

from probes.raw.capability import has_cap_net_raw
from probes.raw.echo import echo
from probes.raw.fingerprint import fingerprint_dns, fingerprint_reset
from probes.raw.followup import (
    RawOptions,
    RawProber,
    reset_trigger,
    trace_method,
    wants_reset_fingerprint,
)
from probes.raw.ratelimit import RateLimits
from probes.raw.results import (
    DnsAnswerEvidence,
    DnsFingerprint,
    Echo,
    Hop,
    PacketEvidence,
    ResetFingerprint,
    Trace,
)
from probes.raw.trace import trace

__all__ = [
    "DnsAnswerEvidence",
    "DnsFingerprint",
    "Echo",
    "Hop",
    "PacketEvidence",
    "RateLimits",
    "RawOptions",
    "RawProber",
    "ResetFingerprint",
    "Trace",
    "echo",
    "fingerprint_dns",
    "fingerprint_reset",
    "has_cap_net_raw",
    "reset_trigger",
    "trace",
    "trace_method",
    "wants_reset_fingerprint",
]
