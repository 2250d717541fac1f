"""Immutable plans: what to probe and with what, decided once per config load.

The measurement code reads these, never the config's pydantic models, so that a target's URL
is parsed once per load, not once per step per address per cycle.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import SplitResult

from probes.blockpages import Fingerprint
from probes.dns import Resolver
from probes.dns_fingerprints import DnsFingerprint
from probes.exchange import Exchange
from probes.taxonomy import Step

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# How a sampled prefix address is probed: a TCP connect, or one SYN of a stateless scan (raw
# socket).
Method = Literal["connect", "syn"]
METHODS: tuple[Method, ...] = ("connect", "syn")

# The prefix-sampling seed every vantage uses unless its operator sets another one. Vantages
# compared with each other must share a seed; a private seed makes a vantage's samples
# unpredictable to anyone who reads this file.
DEFAULT_SEED = "reachprobe-prefix-sampling-v1"
# The largest sample a prefix may ask for per cycle: 4,096 connects already give +-1.6% at 95%.
MAX_SAMPLE = 4096
# SYNs per second of the syn method: conservative, what a home line bears without notice.
DEFAULT_SYN_RATE = 1000.0


class PrefixLike(Protocol):
    """A prefix to sample each cycle; `Prefix` and the agent's `PrefixConfig` are ones."""

    @property
    def name(self) -> str: ...
    @property
    def cidr(self) -> IPNetwork | str: ...
    @property
    def port(self) -> int: ...
    @property
    def sample(self) -> int: ...
    @property
    def method(self) -> Method: ...


@dataclass(frozen=True)
class Prefix:
    """A prefix to sample each cycle (docs/prefixes.md): a label, the network, the port, the
    sample size and how each address is probed."""

    name: str
    cidr: IPNetwork | str
    port: int = 443
    sample: int = 16
    method: Method = "connect"


@dataclass(frozen=True, slots=True)
class HttpPlan:
    """The HTTP step of a URL target: the URL (`parts`: parsed once, when the plan is made)
    and what a genuine answer looks like."""

    url: str
    parts: SplitResult
    expect_status: tuple[int, ...] = ()
    expect_body: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """One target, parsed: `scheme` is `https`, `http`, `tls` (host with tls) or `tcp`."""

    name: str
    group: str
    scheme: str
    host: str
    port: int
    http: HttpPlan | None = None
    exchange: Exchange | None = None

    @property
    def uses_tls(self) -> bool:
        return self.scheme in ("https", "tls")

    @property
    def sni(self) -> str | None:
        """The name sent in the ClientHello (the target's host), for TLS targets."""
        return self.host if self.uses_tls else None

    @property
    def is_address(self) -> bool:
        """True when the host is an IP address: no DNS step."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps run against each address, in order."""
        return (
            Step.TCP,
            *((Step.EXCHANGE,) if self.exchange is not None else ()),
            *((Step.TLS,) if self.uses_tls else ()),
            *((Step.HTTP,) if self.http is not None else ()),
        )


@dataclass(frozen=True, slots=True)
class VantagePlan:
    """Which checks run: canaries are the targets of `canary_group`; `tcp_canary` is an
    address that must never answer (RFC 5737 space by default); `nxdomain_suffix` is a
    domain under which a random name cannot exist. None turns a check off."""

    canary_group: str = "canary"
    tcp_canary: tuple[str, int] | None = None
    nxdomain_suffix: str | None = None


@dataclass(frozen=True, slots=True)
class RawPlan:
    """The raw follow-ups to run (docs/raw.md). `options` is `probes.raw.RawOptions`, kept
    untyped here so that planning never imports scapy; `forced` traces every target."""

    options: object
    trace: bool = True
    fingerprint: bool = True
    forced: bool = False
    echo: bool = False
    # The test resolver, when it is asked over UDP (the DNS fingerprint repeats its query).
    resolver: tuple[str, int] | None = None
    window: float = 0.5


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """Everything the measurement layer needs from one config."""

    targets: tuple[TargetPlan, ...]
    test_resolver: Resolver
    control_resolver: Resolver | None = None
    timeout: float = 5.0
    concurrency: int = 64
    max_addresses: int = 4
    address_limit: int = 8
    max_body_bytes: int = 1 << 20
    # Characters of each page's body the HTTP facts keep (for the measurement log; 0: none).
    body_sample: int = 0
    injection_window: float = 0.5
    bogon_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ca_file: str | None = None
    fingerprints: tuple[Fingerprint, ...] = field(default=())
    dns_fingerprints: tuple[DnsFingerprint, ...] = field(default=())
    jitter: float = 0.0
    vantage: VantagePlan = field(default=VantagePlan())
    prefixes: tuple[Prefix, ...] = ()
    prefix_seed: str = DEFAULT_SEED
    prefix_syn_rate: float = DEFAULT_SYN_RATE
    interval: float = 60.0
    raw: RawPlan | None = None
