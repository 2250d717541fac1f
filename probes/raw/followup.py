"""What the agent runs after a target's ordinary steps: the raw follow-ups, chosen from results.

The agent keeps one `RawProber` per config (its rate limits are shared by every raw probe)
and asks it, per target, for the follow-ups that the result codes call for (which verdicts
get a trace is the measurement layer's policy, measure/followups/raw.py):

- `wants_reset_fingerprint(result)`: whether a step's result code is a RST to fingerprint;
- `reset_trigger(result, sni, host)`: what to resend for a reset fingerprint;
- `RawProber.trace/reset/dns/echo`: the probes, with the configured limits and options.
"""

from __future__ import annotations

import asyncio

from probes.dns import INJECTION_WINDOW
from probes.raw import packets
from probes.raw.echo import echo
from probes.raw.fingerprint import fingerprint_dns, fingerprint_reset
from probes.raw.options import RawOptions
from probes.raw.ratelimit import RateLimits
from probes.raw.results import DnsFingerprint, Echo, Method, ResetFingerprint, Trace
from probes.raw.trace import trace
from probes.taxonomy import Code

# Results that are a RST, and whether the RST answered the SYN or a trigger sent after it.
_RESET_AFTER_TRIGGER = {Code.TLS_RESET: "tls", Code.HTTP_RESET: "http"}
_RESET_ON_CONNECT = {Code.TCP_RESET, Code.TCP_REFUSED}


def wants_reset_fingerprint(result: Code) -> bool:
    """True for the result codes that are a RST (the fingerprint says who sent it)."""
    return result in _RESET_AFTER_TRIGGER or result in _RESET_ON_CONNECT


def reset_trigger(result: Code, *, sni: str | None, host: str | None) -> bytes | None:
    """The bytes to resend after the handshake for `result`, or None for a RST to the SYN."""
    kind = _RESET_AFTER_TRIGGER.get(result)
    if kind == "tls" and sni:
        return packets.client_hello(sni)
    if kind == "http" and host:
        return packets.http_request(host)
    return None


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
        self, address: str, port: int, result: Code, *, sni: str | None, host: str | None
    ) -> ResetFingerprint:
        """The reset fingerprint for a step that ended in `result` (see wants_reset_fingerprint)."""
        trigger = reset_trigger(result, sni=sni, host=host)
        return await fingerprint_reset(
            address, port, trigger=trigger, timeout=self.options.timeout, limits=self.limits
        )

    async def dns(
        self, resolver: str, name: str, *, port: int = 53, window: float = INJECTION_WINDOW
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
