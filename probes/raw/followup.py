"""What the agent runs after a target's ordinary steps: the raw follow-ups, chosen from results.

The agent keeps one `RawProber` per config (its rate limits are shared by every raw probe)
and asks it, per target, for the follow-ups that the verdict and result codes call for:

- `trace_method(verdict, scheme)`: which trace localizes the censor (None: no trace);
- `reset_trigger(result, sni, host)`: what to resend for a reset fingerprint;
- `RawProber.trace/reset/dns/echo`: the probes, with the configured limits and options.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from probes.raw import packets
from probes.raw.echo import echo
from probes.raw.fingerprint import fingerprint_dns, fingerprint_reset
from probes.raw.ratelimit import RateLimits
from probes.raw.results import DnsFingerprint, Echo, Method, ResetFingerprint, Trace
from probes.raw.trace import CONTROL_NAME, DEFAULT_MAX_TTL, trace

# The step whose failure a verdict names decides which trigger localizes it.
_TRACE_BY_VERDICT: dict[str, Method] = {
    "tcp_ip_blocking": "syn",
    "tls_blocking": "tls",
    "http_blocking": "http",
}
_TRACE_BY_SCHEME: dict[str, Method] = {"tcp": "syn", "tls": "tls", "https": "tls", "http": "http"}
# Results that are a RST, and whether the RST answered the SYN or a trigger sent after it.
_RESET_AFTER_TRIGGER = {"tls_reset": "tls", "http_reset": "http"}
_RESET_ON_CONNECT = {"tcp_reset", "tcp_refused"}


def trace_method(verdict: str, scheme: str, *, forced: bool = False) -> Method | None:
    """The trace for a target with `verdict`, or None when none is called for.

    A blocking verdict picks the trigger of the failing step (`dns_blocking`,
    `inconclusive` and `reachable` get none). `forced` (`check --trace`) traces any target
    with its own scheme's trigger, so a reachable one shows its path with no blocking hop.
    """
    method = _TRACE_BY_VERDICT.get(verdict)
    if method is None and forced:
        method = _TRACE_BY_SCHEME.get(scheme)
    return method


def wants_reset_fingerprint(result: str) -> bool:
    """True for the result codes that are a RST (the fingerprint says who sent it)."""
    return result in _RESET_AFTER_TRIGGER or result in _RESET_ON_CONNECT


def reset_trigger(result: str, *, sni: str | None, host: str | None) -> bytes | None:
    """The bytes to resend after the handshake for `result`, or None for a RST to the SYN."""
    kind = _RESET_AFTER_TRIGGER.get(result)
    if kind == "tls" and sni:
        return packets.client_hello(sni)
    if kind == "http" and host:
        return packets.http_request(host)
    return None


@dataclass(frozen=True, slots=True)
class RawOptions:
    """The agent config's `raw` section, as the probes need it (see agent.config.RawSection)."""

    rate_per_second: float = 5.0
    global_rate_per_second: float = 20.0
    max_ttl: int = DEFAULT_MAX_TTL
    repeats: int = 3
    timeout: float = 2.0
    control_sni: str = CONTROL_NAME
    control_host: str = CONTROL_NAME


class RawProber:
    """The raw probes of one agent config, sharing one set of rate limits.

    Its traces run one at a time: every trace asks the same routers for time-exceeded errors,
    which they rate-limit per destination (Linux: one a second after a burst of six), so
    traces at once would spend each other's answers and read the routers' silence as a
    censor's (docs/raw.md)."""

    def __init__(self, options: RawOptions) -> None:
        self.options = options
        self.limits = RateLimits(
            global_rate=options.global_rate_per_second, target_rate=options.rate_per_second
        )
        self._tracing = asyncio.Lock()

    async def trace(
        self,
        address: str,
        port: int,
        method: Method,
        *,
        sni: str | None = None,
        host: str | None = None,
    ) -> Trace:
        """`probes.raw.trace` with the configured options."""
        o = self.options
        async with self._tracing:
            return await trace(
                address,
                port,
                method,
                sni=sni,
                host=host,
                control_sni=o.control_sni,
                control_host=o.control_host,
                max_ttl=o.max_ttl,
                repeats=o.repeats,
                timeout=o.timeout,
                limits=self.limits,
            )

    async def reset(
        self, address: str, port: int, result: str, *, sni: str | None, host: str | None
    ) -> ResetFingerprint:
        """The reset fingerprint for a step that ended in `result` (see wants_reset_fingerprint)."""
        trigger = reset_trigger(result, sni=sni, host=host)
        return await fingerprint_reset(
            address, port, trigger=trigger, timeout=self.options.timeout, limits=self.limits
        )

    async def dns(
        self, resolver: str, name: str, *, port: int = 53, window: float = 0.5
    ) -> DnsFingerprint:
        """The DNS fingerprint of `name` at `resolver`, the control name as the reference."""
        return await fingerprint_dns(
            resolver,
            name,
            reference_name=self.options.control_host,
            port=port,
            window=window,
            timeout=self.options.timeout,
            limits=self.limits,
        )

    async def echo(self, address: str) -> Echo:
        """ICMP echo to `address`."""
        return await echo(address, timeout=self.options.timeout, limits=self.limits)
