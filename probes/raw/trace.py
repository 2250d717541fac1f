"""Censor localization (CenTrace-style): the trigger sent with TTL 1, 2, 3 ... along the path.

- `syn`: a raw TCP SYN per TTL (IP blocking). The kernel answers the destination's SYN-ACK
  with a RST, as for any SYN it did not send itself.
- `tls` / `http`: an ordinary kernel TCP connection to the target, then the socket's IP_TTL is
  lowered and the trigger (a ClientHello with the SNI, an HTTP request with the Host) is sent
  on it. Letting the kernel do the handshake, sequence numbers and retransmissions is what
  keeps the trigger byte-for-byte a real client's; only its TTL differs. ICMP time-exceeded
  and the RSTs are read on raw sockets.

Each TTL is probed `repeats` times at once, each on a fresh source port (so ECMP paths and a
flaky router show up as disagreement), and more times if they disagree. For tls/http the
same trace with an innocuous SNI/Host (the control) runs first: residual censorship after a
trigger would otherwise spoil the control.

Routers rate-limit their ICMP errors (Linux: `net.ipv4.icmp_ratelimit`, one a second per
destination after a burst of six), so a probe that got nothing back may have met a silent
router, not a censor; several traces at once drain the same buckets. Silence is therefore the
weakest answer: any answer at a TTL outvotes it, a silent TTL is no divergence when the
trigger got an answer from further along, and a silence that decides a trace is asked again
after a pause (`REPROBE_PAUSE`), beside the control, before it is believed (docs/raw.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from probes.browser import CONTROL_NAME
from probes.errors import attempt, describe
from probes.raw import packets
from probes.raw.capability import SKIPPED_NO_CAP, has_cap_net_raw
from probes.raw.capture import Capture
from probes.raw.options import DEFAULT_MAX_TTL, DEFAULT_TIMEOUT
from probes.raw.ratelimit import RateLimits
from probes.raw.results import (
    DATA,
    FIN,
    HANDSHAKE_FAILED,
    RST,
    SYNACK,
    TIME_EXCEEDED,
    TIMEOUT,
    UNREACHABLE,
    Hop,
    Method,
    Trace,
)
from probes.raw.syn import SynSender
from probes.taxonomy import Failure

DEFAULT_BUDGET = 120.0
# Silent TTLs in a row after which a syn trace stops (the packet is not getting through).
SILENT_STOP = 3
RECV_BYTES = 4096
# Responses that mean the trigger reached whoever answers for the destination.
ARRIVED = (SYNACK, RST, FIN, DATA)
# Responses that say nothing of how far the trigger got.
SILENT = (TIMEOUT, HANDSHAKE_FAILED)
# The wait before a deciding silence is asked again: longer than Linux's default ICMP rate
# limit interval (1 s), so that the router's bucket holds a token again.
REPROBE_PAUSE = 1.1
# Paced rounds before a silence is believed, or the trace says it could not decide.
REPROBE_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class Observation:
    """What one probe at one TTL got back."""

    response: str
    address: str | None


Probe = Callable[[int], Awaitable[Observation]]


async def trace(
    address: str,
    port: int,
    method: Method,
    *,
    sni: str | None = None,
    host: str | None = None,
    control_sni: str = CONTROL_NAME,
    control_host: str = CONTROL_NAME,
    max_ttl: int = DEFAULT_MAX_TTL,
    repeats: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    budget: float = DEFAULT_BUDGET,
    limits: RateLimits | None = None,
) -> Trace:
    """Find the hop at which `method`'s trigger to `address:port` is stopped.

    `sni` (tls) or `host` (http) is the target's name; the control trace carries
    `control_sni`/`control_host` instead. `timeout` bounds each probe's wait (a TTL takes at
    most two rounds of probes); no new TTL is started after `budget` seconds, and the trace
    then says so in `detail`. Never raises for network trouble: a failure is a Trace with
    status `error` and the reason in `detail`.
    """
    try:
        packets.check_ipv4(address)
        _check_arguments(method, port, max_ttl, repeats, timeout, budget, sni, host)
    except ValueError as exc:
        return Trace("error", method, address, port, detail=str(exc))
    if not has_cap_net_raw():
        return Trace("skipped", method, address, port, detail=SKIPPED_NO_CAP)
    limits = limits or RateLimits()
    deadline = time.monotonic() + budget
    try:
        async with Capture(("icmp", "tcp"), [address]) as capture:
            probe_options = (repeats, timeout, deadline, limits)
            if method == "syn":
                return await _syn_trace(capture, address, port, max_ttl, *probe_options)
            if method == "tls":
                test, control = packets.client_hello(sni or ""), packets.client_hello(control_sni)
            else:
                test = packets.http_request(host or "")
                control = packets.http_request(control_host)
            return await _stream_trace(
                capture, method, address, port, test, control, max_ttl, *probe_options
            )
    except OSError as exc:
        return Trace("error", method, address, port, detail=f"trace failed: {describe(exc)}")


def _check_arguments(
    method: str,
    port: int,
    max_ttl: int,
    repeats: int,
    timeout: float,
    budget: float,
    sni: str | None,
    host: str | None,
) -> None:
    if method not in ("syn", "tls", "http"):
        raise ValueError(f"unknown trace method {method!r} (syn, tls or http)")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if not 1 <= max_ttl <= 64:
        raise ValueError(f"max_ttl {max_ttl} out of range 1..64")
    if not 1 <= repeats <= 10:
        raise ValueError(f"repeats {repeats} out of range 1..10")
    if not 0 < timeout <= 30:
        raise ValueError(f"timeout {timeout} out of range (0, 30] seconds")
    if not 0 < budget <= 3600:
        raise ValueError(f"budget {budget} out of range (0, 3600] seconds")
    if method == "tls" and not sni:
        raise ValueError("a tls trace needs the target's SNI")
    if method == "http" and not host:
        raise ValueError("an http trace needs the target's Host")


def _tally(ttl: int, observations: list[Observation]) -> Hop:
    """The hop the observations at one TTL add up to: the most common answer, where any
    answer outvotes silence (a rate-limited router drops some of its ICMP errors, but nothing
    on the path makes up an answer for a packet that was dropped)."""
    votes = Counter(o.response for o in observations)
    answered = Counter({r: n for r, n in votes.items() if r not in SILENT})
    response, count = (answered or votes).most_common(1)[0]
    addresses = Counter(o.address for o in observations if o.response == response)
    return Hop(ttl, addresses.most_common(1)[0][0], response, count, len(observations))


async def _hop(ttl: int, probe: Probe, repeats: int) -> Hop:
    """Probe one TTL `repeats` times at once, and as many again if they do not all agree."""
    observations: list[Observation] = []
    for _ in range(2):
        observations += await asyncio.gather(*(probe(ttl) for _ in range(repeats)))
        hop = _tally(ttl, observations)
        if hop.agreeing >= repeats:
            break
    return hop


async def _again(ttl: int, probe: Probe, repeats: int, hop: Hop) -> Hop:
    """`hop` with one more round of probes, sent after REPROBE_PAUSE."""
    await asyncio.sleep(REPROBE_PAUSE)
    observations = [Observation(hop.response, hop.address)] * hop.agreeing
    observations += await asyncio.gather(*(probe(ttl) for _ in range(repeats)))
    found = _tally(ttl, observations)
    return Hop(ttl, found.address, found.response, found.agreeing, hop.probes + repeats)


async def _paced(ttl: int, probe: Probe, repeats: int, hop: Hop) -> Hop:
    """A silent `hop` asked again, paced, until it answers or REPROBE_ROUNDS passed."""
    for _ in range(REPROBE_ROUNDS):
        if hop.response not in SILENT:
            break
        hop = await _again(ttl, probe, repeats, hop)
    return hop


async def _walk(
    ttls: range,
    probe: Probe,
    repeats: int,
    deadline: float,
    stop: Callable[[list[Hop]], bool],
    recheck: Callable[[list[Hop]], bool] | None = None,
) -> tuple[list[Hop], bool]:
    """Probe TTL after TTL until `stop(hops)` or the last TTL; False if the deadline cut it.
    A silent hop for which `recheck(hops)` is true is asked again, paced, before it counts."""
    hops: list[Hop] = []
    for ttl in ttls:
        if time.monotonic() > deadline:
            return hops, False
        hops.append(await _hop(ttl, probe, repeats))
        if hops[-1].response in SILENT and recheck is not None and recheck(hops):
            hops[-1] = await _paced(ttl, probe, repeats, hops[-1])
        if stop(hops):
            break
    return hops, True


def _syn_recheck(hops: list[Hop]) -> bool:
    """A silent TTL right after one that answered decides where SYNs stop: ask it again."""
    return len(hops) < 2 or hops[-2].response not in SILENT


def _syn_stop(hops: list[Hop]) -> bool:
    """The destination (or an injector) answered, or SILENT_STOP TTLs in a row were silent."""
    last = hops[-SILENT_STOP:]
    return hops[-1].response in ARRIVED or (
        len(last) == SILENT_STOP and all(h.response == TIMEOUT for h in last)
    )


async def _syn_trace(
    capture: Capture,
    address: str,
    port: int,
    max_ttl: int,
    repeats: int,
    timeout: float,
    deadline: float,
    limits: RateLimits,
) -> Trace:
    with SynSender(address) as sender:

        async def probe(ttl: int) -> Observation:
            return await _syn_probe(capture, sender, port, ttl, timeout, limits)

        hops, finished = await _walk(
            range(1, max_ttl + 1), probe, repeats, deadline, _syn_stop, _syn_recheck
        )
    if not finished:
        return _out_of_time("syn", address, port, hops, [])
    return _syn_verdict(address, port, tuple(hops))


def _out_of_time(
    method: Method, address: str, port: int, hops: list[Hop], control: list[Hop]
) -> Trace:
    return Trace(
        "error",
        method,
        address,
        port,
        hops=tuple(hops),
        control_hops=tuple(control),
        detail="stopped at the time budget before the trace was complete",
    )


def _syn_verdict(address: str, port: int, hops: tuple[Hop, ...]) -> Trace:
    """The blocking hop of a SYN trace: where SYNs stop getting anywhere, or get a RST."""
    responses = [h.response for h in hops]
    if SYNACK in responses:
        return Trace("ok", "syn", address, port, None, None, hops, detail="the SYN got through")
    for hop in hops:
        if hop.response in (RST, UNREACHABLE):
            return Trace(
                "ok",
                "syn",
                address,
                port,
                hop.ttl,
                None,
                hops,
                detail=f"{hop.response} at TTL {hop.ttl} (a RST may be the destination's own: "
                "see the reset fingerprint)",
            )
    answered = [h.ttl for h in hops if h.response == TIME_EXCEEDED]
    if answered and answered[-1] < hops[-1].ttl:
        last = next(h for h in hops if h.ttl == answered[-1])
        return Trace(
            "ok",
            "syn",
            address,
            port,
            last.ttl + 1,
            None,
            hops,
            detail=f"SYNs dropped after TTL {last.ttl} ({last.address}): nothing answers beyond",
        )
    return Trace("ok", "syn", address, port, None, None, hops, detail="no router answered")


async def _syn_probe(
    capture: Capture, sender: SynSender, port: int, ttl: int, timeout: float, limits: RateLimits
) -> Observation:
    """One raw SYN with `ttl` from a fresh source port; what came back first."""
    async with sender.send(port, ttl, limits) as (sport, sent):
        got = await capture.wait(_answers_to(sender.address, port, sport), timeout, since=sent)
    return _observe(got.packet if got else None, sender.address)


def _answers_to(address: str, port: int, sport: int) -> Callable[[packets.IP], bool]:
    """Matches an ICMP error quoting our segment, or a TCP segment from the destination."""

    def match(packet: packets.IP) -> bool:
        return packets.icmp_error_for(packet, address, port, sport) or packets.from_endpoint(
            packet, address, port, sport
        )

    return match


def _observe(packet: packets.IP | None, address: str) -> Observation:
    if packet is None:
        return Observation(TIMEOUT, None)
    kind = packets.icmp_type(packet)
    if kind == packets.ICMP_TIME_EXCEEDED:
        return Observation(TIME_EXCEEDED, packet.src)
    if kind == packets.ICMP_UNREACHABLE:
        return Observation(UNREACHABLE, packet.src)
    flags = packets.tcp_flags(packet)
    return Observation(RST if "R" in flags else SYNACK, address)


async def _stream_trace(
    capture: Capture,
    method: Method,
    address: str,
    port: int,
    trigger: bytes,
    control_trigger: bytes,
    max_ttl: int,
    repeats: int,
    timeout: float,
    deadline: float,
    limits: RateLimits,
) -> Trace:
    def prober(payload: bytes) -> Probe:
        async def probe(ttl: int) -> Observation:
            return await _stream_probe(capture, address, port, payload, ttl, timeout, limits)

        return probe

    control, finished = await _walk(
        range(1, max_ttl + 1),
        prober(control_trigger),
        repeats,
        deadline,
        lambda hops: hops[-1].response in (*ARRIVED, HANDSHAKE_FAILED),
    )
    if not finished:
        return _out_of_time(method, address, port, [], control)
    if control[-1].response == HANDSHAKE_FAILED:
        return Trace(
            "error",
            method,
            address,
            port,
            control_hops=tuple(control),
            detail="the TCP handshake failed, so no trigger could be sent (try method syn)",
        )
    test, finished = await _walk(
        range(1, len(control) + 1), prober(trigger), repeats, deadline, lambda hops: False
    )
    index = _divergence(test, control)
    if not finished and (index is None or test[index].response in SILENT):
        # Cut short, only an answer is evidence: a silence could not be asked again.
        return _out_of_time(method, address, port, test, control)
    undecided = await _confirm_silence(
        test, control, prober(trigger), prober(control_trigger), repeats, deadline
    )
    if undecided is not None:
        return Trace(
            "ok",
            method,
            address,
            port,
            None,
            None,
            tuple(test),
            tuple(control),
            detail=f"TTL {undecided}: neither the trigger nor the control got an answer when "
            "asked again (the router rate-limits its ICMP errors): no blocking hop decided",
        )
    return _stream_verdict(method, address, port, tuple(test), tuple(control))


async def _confirm_silence(
    test: list[Hop],
    control: list[Hop],
    probe: Probe,
    control_probe: Probe,
    repeats: int,
    deadline: float,
) -> int | None:
    """Ask again each silence that would decide the trace, until the deciding difference is
    an answer or a silence confirmed; `test` and `control` are updated in place.

    A deciding silence of the trigger is asked again alone, paced; if it stays silent, the
    control alone, paced, must still get its answer there for the silence to be the
    censor's. Before that, each TTL in front of it where both sides were silent has its
    control asked again: the trigger may have been stopped there, behind a router that was
    rate-limiting. One side at a time, because two sides probing at once would share the
    router's one fresh token and the loser's silence would prove nothing. Returns the TTL
    left undecided (the control went silent too: the router is rate-limiting), or None."""
    asked: set[int] = set()
    while (index := _divergence(test, control)) is not None and test[index].response in SILENT:
        if time.monotonic() > deadline:
            return index + 1
        gap = _silent_gap(test, control, index, asked)
        if gap is not None:
            asked.add(gap)
            control[gap] = await _paced(gap + 1, control_probe, repeats, control[gap])
            continue
        test[index] = await _paced(index + 1, probe, repeats, test[index])
        if test[index].response not in SILENT:
            continue
        again = await _paced(index + 1, control_probe, repeats, _silenced(control[index]))
        if again.response in SILENT:
            control[index] = again
            return index + 1
        control[index] = _joined(control[index], again)
        return None
    return None


def _silent_gap(test: list[Hop], control: list[Hop], index: int, asked: set[int]) -> int | None:
    """The first TTL (index) before `index`, after the trigger's last answer, where the
    control was silent too and has not been asked again yet."""
    answered = [i for i in range(index) if test[i].response not in SILENT]
    start = answered[-1] + 1 if answered else 0
    return next(
        (i for i in range(start, index) if control[i].response in SILENT and i not in asked),
        None,
    )


def _silenced(hop: Hop) -> Hop:
    """`hop` as a silent one, so that `_paced` asks it again and counts only the new answers."""
    return Hop(hop.ttl, None, TIMEOUT, 0, hop.probes)


def _joined(first: Hop, again: Hop) -> Hop:
    """A hop asked again: the new answer, its agreeing probes counted with the first ones'
    when both said the same."""
    same = first.response == again.response
    agreeing = again.agreeing + (first.agreeing if same else 0)
    return Hop(first.ttl, again.address, again.response, agreeing, again.probes)


def _divergence(test: Sequence[Hop], control: Sequence[Hop]) -> int | None:
    """The index of the first TTL at which the trigger fared otherwise than the control, not
    by a router: a silent TTL does not count when the trigger got an answer at a later one
    (it went past, and the router there kept its ICMP error to itself)."""
    for index, (mine, theirs) in enumerate(zip(test, control, strict=False)):
        if mine.response in (theirs.response, TIME_EXCEEDED):
            continue
        if mine.response in SILENT and any(h.response not in SILENT for h in test[index + 1 :]):
            continue
        return index
    return None


def _stream_verdict(
    method: Method, address: str, port: int, test: tuple[Hop, ...], control: tuple[Hop, ...]
) -> Trace:
    """The first TTL at which the trigger fares otherwise than the control, not by a router."""
    index = _divergence(test, control)
    if index is not None:
        mine, theirs = test[index], control[index]
        router = theirs.address if theirs.response == TIME_EXCEEDED else None
        return Trace(
            "ok",
            method,
            address,
            port,
            mine.ttl,
            router,
            test,
            control,
            detail=f"TTL {mine.ttl}: the trigger got {mine.response}, "
            f"the control {theirs.response}" + (f" from {router}" if router else ""),
        )
    reached = control[-1].response in ARRIVED
    detail = (
        "the trigger fared as the control at every hop"
        if reached
        else f"the control did not reach the destination within {len(control)} hops"
    )
    return Trace("ok", method, address, port, None, None, test, control, detail=detail)


async def _stream_probe(
    capture: Capture,
    address: str,
    port: int,
    payload: bytes,
    ttl: int,
    timeout: float,
    limits: RateLimits,
) -> Observation:
    """A kernel connection (normal TTL), then `payload` sent with `ttl`; what came back."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        _, failed = await attempt(loop.sock_connect(sock, (address, port)), timeout)
        if failed is not None:
            return Observation(HANDSHAKE_FAILED, None)
        sport = sock.getsockname()[1]
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        await limits.acquire(address)
        sent = time.monotonic()
        _, failed = await attempt(loop.sock_sendall(sock, payload), timeout)
        if failed is Failure.RESET:
            return Observation(RST, address)  # reset between the handshake and the trigger
        if failed is not None:
            return Observation(HANDSHAKE_FAILED, None)
        icmp = asyncio.ensure_future(
            capture.wait(
                lambda p: packets.icmp_error_for(p, address, port, sport), timeout, since=sent
            )
        )
        reply = asyncio.ensure_future(_read(loop, sock, address, timeout))
        try:
            done, _ = await asyncio.wait({icmp, reply}, return_when=asyncio.FIRST_COMPLETED)
            first = icmp if icmp in done and icmp.result() is not None else reply
            if first is reply and not reply.done():
                # ICMP wait ended empty-handed; the read has the same deadline.
                await reply
            if first is icmp:
                got = icmp.result()
                assert got is not None
                return _observe(got.packet, address)
            return reply.result()
        finally:
            for task in (icmp, reply):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        # Abort with a RST rather than a FIN handshake: the RST leaves with the low TTL too,
        # so no full-TTL copy of the trigger is ever retransmitted towards the censor.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


async def _read(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: str, timeout: float
) -> Observation:
    data, failed = await attempt(loop.sock_recv(sock, RECV_BYTES), timeout)
    if failed is Failure.RESET:
        return Observation(RST, address)
    if failed is not None:
        return Observation(TIMEOUT, None)
    return Observation(DATA if data else FIN, address)
