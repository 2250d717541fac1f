"""ICMP echo (ping), an optional step for `tcp:` targets: is the host there at all?"""

from __future__ import annotations

import random
import socket
import time

from probes.errors import describe
from probes.raw import packets
from probes.raw.capability import SKIPPED_NO_CAP, has_cap_net_raw
from probes.raw.capture import Capture
from probes.raw.ratelimit import RateLimits
from probes.raw.results import Echo
from probes.raw.send import sendto

DEFAULT_TIMEOUT = 1.0
PAYLOAD = bytes(range(48))  # the size and shape of a common ping's payload


async def echo(
    address: str,
    *,
    count: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    limits: RateLimits | None = None,
) -> Echo:
    """Send `count` echo requests (rate-limited) and wait up to `timeout` for each reply."""
    try:
        packets.check_ipv4(address)
        if not 1 <= count <= 10 or not 0 < timeout <= 30:
            raise ValueError(f"count {count} out of 1..10 or timeout {timeout} out of (0, 30]")
    except ValueError as exc:
        return Echo("error", address, detail=str(exc))
    if not has_cap_net_raw():
        return Echo("skipped", address, detail=SKIPPED_NO_CAP)
    limits = limits or RateLimits()
    # Random, so that concurrent echoes (in this process or another) never take each other's.
    ident = random.getrandbits(16)
    rtts: list[float] = []
    reply = None
    try:
        async with Capture(("icmp",), [address]) as capture:
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sender:
                sender.setblocking(False)
                for seq in range(count):
                    await limits.acquire(address)
                    sent = time.monotonic()
                    request = packets.echo_request(ident, seq, PAYLOAD)
                    await sendto(sender, request, (address, 0))

                    def match(packet: packets.IP, seq: int = seq) -> bool:
                        return packet.src == address and packets.echo_reply_ids(packet) == (
                            ident,
                            seq,
                        )

                    got = await capture.wait(match, timeout, since=sent)
                    if got is not None:
                        rtts.append(got.at - sent)
                        reply = packets.evidence(got.packet)
    except OSError as exc:
        return Echo("error", address, count, len(rtts), detail=f"echo failed: {describe(exc)}")
    rtt = min(rtts) if rtts else None
    detail = f"{len(rtts)}/{count} echo replies" + (f", fastest {rtt * 1000:.1f}ms" if rtt else "")
    return Echo("ok", address, count, len(rtts), rtt, reply, detail)
