"""Token buckets: every raw send waits for a token of its target's bucket and the global one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from probes.raw.options import DEFAULT_GLOBAL_RATE, DEFAULT_TARGET_RATE

MAX_TARGET_BUCKETS = 4096


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; `acquire` waits for one."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def reserve(self) -> float:
        """Take one token now, possibly on credit; return how long to wait before using it.

        Going into debt instead of holding a lock keeps callers in order without binding the
        bucket to one event loop.
        """
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> None:
        """Take one token, sleeping until it is due."""
        delay = self.reserve()
        if delay:
            await asyncio.sleep(delay)


@dataclass
class RateLimits:
    """The rate limits of one agent: a global bucket and one bucket per target address.

    Rates are probe packets per second (a trigger, a SYN, an echo request, a DNS query); the
    kernel's own retransmissions and handshake packets are not counted. One instance is
    shared by all raw probes of the agent; the defaults are what a volunteer's line and the
    routers' ICMP rate limits bear without notice.
    """

    global_rate: float = DEFAULT_GLOBAL_RATE
    target_rate: float = DEFAULT_TARGET_RATE
    _global: TokenBucket | None = field(default=None, init=False, repr=False)
    _targets: dict[str, TokenBucket] = field(default_factory=dict, init=False, repr=False)

    async def acquire(self, address: str) -> None:
        """Wait until one more probe packet to `address` is allowed."""
        if self._global is None:
            self._global = TokenBucket(self.global_rate, max(1.0, self.global_rate))
        bucket = self._targets.get(address)
        if bucket is None:
            if len(self._targets) >= MAX_TARGET_BUCKETS:
                # Targets come from the config, so this is a guard, not a working limit.
                self._targets.pop(next(iter(self._targets)))
            bucket = self._targets[address] = TokenBucket(
                self.target_rate, max(1.0, self.target_rate)
            )
        # Both reserved at once, so a wait for one bucket is not added to the other's.
        delay = max(bucket.reserve(), self._global.reserve())
        if delay:
            await asyncio.sleep(delay)


DEFAULT_LIMITS = RateLimits()
