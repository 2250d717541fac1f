"""Injection fingerprints: was a RST, or a DNS answer, sent by the server or forged on the path?

A middlebox that forges a packet writes its own IP header: its initial TTL and its distance
from us rarely match the server's, and its IP ID follows its own counter. So each suspect
packet is compared with a reference packet that certainly came from the server: the SYN-ACK
of the same server for a RST, the resolver's answer to an innocuous name for a DNS answer.
The verdict rests on the hop distance (initial TTL minus received TTL); IP ID and TCP window
are reported as further evidence. An injector that copies the TTL of the packet it answers
defeats the comparison: the verdict is then `genuine` and only the evidence hints otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence

import dns.exception
import dns.message
import dns.rdatatype

from probes.dns import INJECTION_WINDOW
from probes.errors import attempt, describe
from probes.raw import packets
from probes.raw.capability import SKIPPED_NO_CAP, has_cap_net_raw
from probes.raw.capture import Capture
from probes.raw.ratelimit import RateLimits
from probes.raw.results import (
    DnsAnswerEvidence,
    DnsFingerprint,
    PacketEvidence,
    ResetFingerprint,
    Verdict,
)
from probes.raw.syn import SynSender

DEFAULT_TIMEOUT = 2.0
# How long to keep collecting RSTs after the first (injectors often send several).
RESET_WINDOW = 0.3
DEFAULT_REFERENCE_PORTS = (443, 80)


def compare(reference: PacketEvidence, suspect: PacketEvidence) -> tuple[Verdict, str]:
    """`injected` if `suspect` crossed another number of hops than `reference`, else `genuine`."""
    facts = (
        f"TTL {suspect.ttl} ({suspect.hops} hops from an initial {suspect.initial_ttl}) vs "
        f"{reference.ttl} ({reference.hops} hops from {reference.initial_ttl}); "
        f"IP ID {suspect.ip_id} vs {reference.ip_id}"
    )
    if suspect.window is not None and reference.window is not None:
        facts += f"; window {suspect.window} vs {reference.window}"
    same = suspect.hops == reference.hops and suspect.initial_ttl == reference.initial_ttl
    return ("genuine" if same else "injected"), facts


async def fingerprint_reset(
    address: str,
    port: int,
    *,
    trigger: bytes | None = None,
    reference_ports: Sequence[int] = DEFAULT_REFERENCE_PORTS,
    timeout: float = DEFAULT_TIMEOUT,
    limits: RateLimits | None = None,
) -> ResetFingerprint:
    """Tell a forged RST from the server's own, for a connection to `address:port`.

    With `trigger` (the ClientHello or HTTP request that got reset: `tls_reset`,
    `http_reset`), a kernel connection is made, its SYN-ACK kept as the reference, the
    trigger sent and the RSTs that follow compared with it. Without (`tcp_refused`,
    `tcp_reset`: the SYN itself is answered by a RST), a raw SYN goes to `port` and the
    reference SYN-ACK comes from the first of `reference_ports` on the same server that
    accepts one. The latter is also what happens when the handshake before a trigger fails.
    """
    try:
        packets.check_ipv4(address)
        if not all(0 < p < 65536 for p in (port, *reference_ports)) or not 0 < timeout <= 30:
            raise ValueError(f"bad port {port}, reference ports {reference_ports} or timeout")
    except ValueError as exc:
        return ResetFingerprint("error", "unknown", address, port, detail=str(exc))
    if not has_cap_net_raw():
        return ResetFingerprint("skipped", "unknown", address, port, detail=SKIPPED_NO_CAP)
    limits = limits or RateLimits()
    try:
        async with Capture(("tcp",), [address]) as capture:
            found = None
            if trigger is not None:
                found = await _triggered_resets(capture, address, port, trigger, timeout, limits)
            if found is None:
                # No trigger, or the handshake itself failed (a censor may keep resetting SYNs
                # for a while after a trigger): the RST to a SYN is what there is to judge.
                found = await _syn_answers(capture, address, port, reference_ports, timeout, limits)
            reference, resets = found
    except OSError as exc:
        return ResetFingerprint(
            "error", "unknown", address, port, detail=f"failed: {describe(exc)}"
        )
    if not resets:
        return ResetFingerprint(
            "ok", "unknown", address, port, reference, detail="no RST was received"
        )
    if reference is None:
        return ResetFingerprint(
            "ok", "unknown", address, port, None, tuple(resets), detail="no SYN-ACK from the server"
        )
    verdicts = [compare(reference, rst) for rst in resets]
    verdict: Verdict = "injected" if any(v == "injected" for v, _ in verdicts) else "genuine"
    detail = f"{verdict}: " + " | ".join(facts for _, facts in verdicts)
    return ResetFingerprint("ok", verdict, address, port, reference, tuple(resets), detail)


async def _syn_answers(
    capture: Capture,
    address: str,
    port: int,
    reference_ports: Sequence[int],
    timeout: float,
    limits: RateLimits,
) -> tuple[PacketEvidence | None, list[PacketEvidence]]:
    with SynSender(address) as sender:
        answers = await _raw_syn(capture, sender, port, timeout, limits)
        resets = [packets.evidence(p) for p in answers if "R" in packets.tcp_flags(p)]
        reference = None
        for ref_port in [p for p in reference_ports if p != port]:
            got = await _raw_syn(capture, sender, ref_port, timeout, limits)
            synacks = [p for p in got if packets.tcp_flags(p) == "SA"]
            if synacks:
                reference = packets.evidence(synacks[0])
                break
    return reference, resets


async def _raw_syn(
    capture: Capture, sender: SynSender, port: int, timeout: float, limits: RateLimits
) -> list[packets.IP]:
    """Send one SYN; return the TCP answers from the destination within the reset window."""
    async with sender.send(port, 64, limits) as (sport, sent):

        def match(packet: packets.IP) -> bool:
            return packets.from_endpoint(packet, sender.address, port, sport)

        first = await capture.wait(match, timeout, since=sent)
        if first is None:
            return []
        await asyncio.sleep(RESET_WINDOW)
        return [c.packet for c in capture.matching(match, since=sent)]


async def _triggered_resets(
    capture: Capture,
    address: str,
    port: int,
    trigger: bytes,
    timeout: float,
    limits: RateLimits,
) -> tuple[PacketEvidence | None, list[PacketEvidence]] | None:
    """The SYN-ACK and the RSTs after `trigger`, or None if the handshake failed."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        started = time.monotonic()
        await limits.acquire(address)
        _, failed = await attempt(loop.sock_connect(sock, (address, port)), timeout)
        if failed is not None:
            return None
        sport = sock.getsockname()[1]

        def from_server(packet: packets.IP) -> bool:
            return packets.from_endpoint(packet, address, port, sport)

        def is_reset(packet: packets.IP) -> bool:
            return from_server(packet) and "R" in packets.tcp_flags(packet)

        # The connect has seen the SYN-ACK; the raw socket's copy may still wait to be read.
        synack = await capture.wait(
            lambda p: from_server(p) and packets.tcp_flags(p) == "SA", timeout, since=started
        )
        sent = time.monotonic()
        with contextlib.suppress(OSError):
            await loop.sock_sendall(sock, trigger)
        first = await capture.wait(is_reset, timeout, since=sent)
        if first is not None:
            await asyncio.sleep(RESET_WINDOW)
        resets = [packets.evidence(c.packet) for c in capture.matching(is_reset, since=sent)]
        return (packets.evidence(synack.packet) if synack else None), resets
    finally:
        sock.close()


async def fingerprint_dns(
    resolver: str,
    name: str,
    *,
    reference_name: str,
    port: int = 53,
    window: float = INJECTION_WINDOW,
    timeout: float = DEFAULT_TIMEOUT,
    limits: RateLimits | None = None,
) -> DnsFingerprint:
    """Query `resolver` over UDP for `name` (A) and fingerprint every answer that races in.

    First the resolver answers `reference_name` (a name nobody censors); that answer's TTL is
    the resolver's. Then every answer to the query for `name`, for `window` seconds after the
    first, is `injected` if it crossed another number of hops, else `genuine`.
    """
    try:
        packets.check_ipv4(resolver)
        if not 0 < port < 65536 or not 0 < timeout <= 30 or not 0 <= window <= 10:
            raise ValueError(f"bad port {port}, timeout {timeout} or window {window}")
        dns.message.make_query(name, "A")
        dns.message.make_query(reference_name, "A")
    except (ValueError, dns.exception.DNSException) as exc:
        return DnsFingerprint("error", "unknown", resolver, name, detail=str(exc))
    if not has_cap_net_raw():
        return DnsFingerprint("skipped", "unknown", resolver, name, detail=SKIPPED_NO_CAP)
    limits = limits or RateLimits()
    try:
        async with Capture(("udp",), [resolver]) as capture:
            ref = await _dns_answers(capture, resolver, port, reference_name, 0.0, timeout, limits)
            answers = await _dns_answers(capture, resolver, port, name, window, timeout, limits)
    except OSError as exc:
        return DnsFingerprint("error", "unknown", resolver, name, detail=f"failed: {describe(exc)}")
    if not answers:
        return DnsFingerprint("ok", "unknown", resolver, name, detail="no answer")
    reference = ref[0][0] if ref else None
    judged = []
    facts = []
    for evidence, addresses, arrival in answers:
        verdict: Verdict = "unknown"
        if reference is not None:
            verdict, why = compare(reference, evidence)
            facts.append(f"{','.join(addresses) or 'no address'}: {verdict}, {why}")
        judged.append(DnsAnswerEvidence(addresses, evidence, arrival, verdict))
    if reference is None:
        overall: Verdict = "unknown"
        detail = f"no answer for the reference name {reference_name}"
    else:
        overall = "injected" if any(a.verdict == "injected" for a in judged) else "genuine"
        detail = f"{overall}: {len(judged)} answer(s); " + " | ".join(facts)
    return DnsFingerprint("ok", overall, resolver, name, reference, tuple(judged), detail)


async def _dns_answers(
    capture: Capture,
    resolver: str,
    port: int,
    name: str,
    window: float,
    timeout: float,
    limits: RateLimits,
) -> list[tuple[PacketEvidence, tuple[str, ...], float]]:
    """Send one query; return (evidence, addresses, arrival) of each answer within `window`."""
    loop = asyncio.get_running_loop()
    query = dns.message.make_query(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((resolver, port))
        sport = sock.getsockname()[1]
        await limits.acquire(resolver)
        sent = time.monotonic()
        await loop.sock_sendall(sock, query.to_wire())

        def match(packet: packets.IP) -> bool:
            payload = packets.udp_payload(packet, port, sport)
            return payload is not None and payload[:2] == query.to_wire()[:2]

        first = await capture.wait(match, timeout, since=sent)
        if first is None:
            return []
        if window:
            await asyncio.sleep(max(0.0, first.at + window - time.monotonic()))
        out = []
        for item in capture.matching(match, since=sent):
            payload = packets.udp_payload(item.packet, port, sport) or b""
            try:
                message = dns.message.from_wire(payload)
            except dns.exception.DNSException:
                continue
            addresses = tuple(
                rdata.to_text()
                for rrset in message.answer
                if rrset.rdtype == dns.rdatatype.A
                for rdata in rrset
            )
            out.append((packets.evidence(item.packet), addresses, item.at - sent))
        return out
