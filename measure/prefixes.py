"""Prefix sampling: estimate what fraction of a whole prefix is reachable, one sample per cycle.

A cloud prefix holds thousands to billions of addresses; a vantage connects to a small random
sample of them each cycle and reports the reachable fraction with its 95% Wilson score interval.
The sample is drawn from a keyed hash of (shared seed, prefix, cycle number), so every vantage
with the same seed probes the same addresses in the same cycle without talking to the others:
an operator can then compare a test vantage with a control vantage address for address (see
docs/prefixes.md). `cycle_number(now, interval)` gives vantages a cycle number they agree on.

Each sampled address is probed by a TCP connect (the `connect` method, the default) or, where
the volunteer opts in and CAP_NET_RAW is held, by one SYN of a rate-limited stateless scan (the
`syn` method, probes/raw/synscan.py); both give the TCP step's codes. The connects go through
the measurement layer's one pool (`measure.pool.map_bounded`) and, in a cycle, under the
prober's concurrency bound, so that `concurrency` bounds prefix sockets like target sockets.

`python -m measure.prefixes --cidr 198.18.16.0/20 --port 443` samples and sweeps one prefix and
prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from measure.plan import (
    DEFAULT_SEED,
    DEFAULT_SYN_RATE,
    METHODS,
    IPNetwork,
    Method,
    Prefix,
    PrefixLike,
)
from measure.pool import map_bounded
from measure.report import AddressOutcome, PrefixResult
from probes import tcp
from probes.results import StepResult
from probes.taxonomy import OK

# 95% two-sided: the normal quantile of the Wilson score interval.
Z_95 = 1.959963984540054
# Domain separation, so that this hash is never reused for anything else by accident.
_DOMAIN = b"reachprobe/prefix-sample/v1"

# --- sampling ---------------------------------------------------------------------------------


def _network(cidr: str | IPNetwork) -> IPNetwork:
    if isinstance(cidr, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return cidr
    try:
        return ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not a network in CIDR form: {exc}") from None


def _host_span(network: IPNetwork) -> tuple[int, int]:
    """(offset of the first usable address, how many there are), as `hosts()` counts them.

    IPv4 networks of /30 and larger lose their network and broadcast addresses (nothing
    answers there); IPv6 networks of /126 and larger lose the subnet-router anycast address.
    """
    size = network.num_addresses
    if network.version == 4:
        return (1, size - 2) if network.prefixlen <= 30 else (0, size)
    return (1, size - 1) if network.prefixlen <= 126 else (0, size)


def host_count(cidr: str | IPNetwork) -> int:
    """How many addresses of `cidr` can be sampled (see `sample`)."""
    return _host_span(_network(cidr))[1]


class _KeyedStream:
    """A deterministic stream of uniform integers: BLAKE2b in counter mode under one key.

    Hand-written rather than `random.Random` because the stream must be identical on every
    vantage whatever its Python version, and `random`'s integer methods may change between
    versions (only `random()` itself is guaranteed).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buffer = b""
        self._position = 0

    def _take(self, count: int) -> bytes:
        if self._position + count > len(self._buffer):
            block = hashlib.blake2b(self._counter.to_bytes(8, "big"), key=self._key).digest()
            self._buffer = self._buffer[self._position :] + block
            self._position = 0
            self._counter += 1
        chunk = self._buffer[self._position : self._position + count]
        self._position += count
        return chunk

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), by rejection (no modulo bias)."""
        bits = (bound - 1).bit_length()
        if bits == 0:
            return 0
        size, mask = (bits + 7) // 8, (1 << bits) - 1
        while True:
            value = int.from_bytes(self._take(size), "big") & mask
            if value < bound:
                return value


def _part(data: bytes) -> bytes:
    # Length-prefixed, so that no two (seed, prefix, cycle) triples hash the same input.
    return len(data).to_bytes(4, "big") + data


def sample(cidr: str | IPNetwork, k: int, seed: bytes | str, cycle: int) -> list[str]:
    """`k` distinct addresses of `cidr`, uniformly at random, fixed by (seed, cidr, cycle).

    Every vantage calling this with the same arguments gets the same list, in the same order.
    A `k` larger than the prefix returns every address of it (see `host_count`). IPv4 and
    IPv6; the network, broadcast and subnet-router anycast addresses are never sampled.
    """
    network = _network(cidr)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"sample size must be a non-negative integer, not {k!r}")
    if isinstance(cycle, bool) or not isinstance(cycle, int):
        raise ValueError(f"cycle must be an integer, not {cycle!r}")
    seed_bytes = seed.encode() if isinstance(seed, str) else bytes(seed)
    first, count = _host_span(network)
    material = b"".join(
        _part(p)
        for p in (_DOMAIN, seed_bytes, network.with_prefixlen.encode(), str(cycle).encode())
    )
    stream = _KeyedStream(hashlib.blake2b(material, digest_size=32).digest())
    # A partial Fisher-Yates shuffle over a virtual array of the prefix's offsets: exactly
    # uniform, k steps and O(k) memory even for an IPv6 /32, never a rejected duplicate.
    moved: dict[int, int] = {}
    base = int(network.network_address) + first
    make = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    picked: list[str] = []
    for i in range(min(k, count)):
        j = i + stream.below(count - i)
        chosen = moved.get(j, j)
        moved[j] = moved.get(i, i)
        picked.append(str(make(base + chosen)))
    return picked


def cycle_number(now: float, interval: float) -> int:
    """The cycle that wall-clock time `now` falls in: floor(now / interval).

    Vantages with the same interval and a synchronised clock agree on it without talking.
    """
    if interval <= 0:
        raise ValueError("interval must be greater than zero")
    return math.floor(now / interval)


# --- the interval -----------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (low, high) for `successes` out of `n` (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 and n successes,
    which is where a blocked or an unblocked prefix sits. `n == 0` says nothing: (0.0, 1.0).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


# --- the sweep --------------------------------------------------------------------------------


def summarize(
    name: str, cidr: str, outcomes: Sequence[AddressOutcome], method: Method = "connect"
) -> PrefixResult:
    """Count `outcomes` into a PrefixResult: ratio, Wilson interval and counts per code."""
    counts = Counter(o.result for o in outcomes)
    sampled = len(outcomes)
    reachable = counts.get(OK, 0)
    low, high = wilson(reachable, sampled)
    return PrefixResult(
        name=name,
        cidr=cidr,
        sampled=sampled,
        reachable=reachable,
        ratio=reachable / sampled if sampled else 0.0,
        ci_low=low,
        ci_high=high,
        results=dict(sorted(counts.items())),
        outcomes=tuple(outcomes),
        method=method,
    )


def _outcome(address: str, result: StepResult) -> AddressOutcome:
    return AddressOutcome(address, result.result.value, round(result.duration_seconds, 6))


def _check_sweep(port: int, timeout: float, concurrency: int, method: str = "connect") -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be from 1 to 65535, not {port!r}")
    if not timeout > 0:
        raise ValueError("timeout must be greater than zero")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")


def _checked(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    return address


async def _connect_all(
    jobs: Sequence[tuple[str, int]],
    timeout: float,
    concurrency: int,
    limiter: asyncio.Semaphore | None,
) -> list[AddressOutcome]:
    """Connect to every (address, port), `concurrency` at once (and each under `limiter`,
    the prober's bound, when given), in job order."""
    bound = limiter if limiter is not None else contextlib.nullcontext()

    async def connect(job: tuple[str, int]) -> AddressOutcome:
        async with bound:
            return _outcome(job[0], await tcp.probe(job[0], job[1], timeout))

    return await map_bounded(connect, jobs, concurrency)


async def _syn_scan_all(
    jobs: Sequence[tuple[str, int]], timeout: float, rate: float
) -> list[AddressOutcome]:
    """One SYN to every (address, port), `rate` a second, in job order (needs CAP_NET_RAW)."""
    if not jobs:
        return []
    from probes.raw import synscan  # scapy loads only for a vantage that SYN-scans

    results = await synscan.scan(jobs, timeout, rate)
    return [_outcome(address, r) for (address, _), r in zip(jobs, results, strict=True)]


async def _probe_all(
    jobs: Sequence[tuple[str, int, Method]],
    timeout: float,
    concurrency: int,
    syn_rate: float,
    limiter: asyncio.Semaphore | None = None,
) -> list[AddressOutcome]:
    """Probe every (address, port, method), the two methods side by side, in job order."""
    split: dict[Method, list[int]] = {m: [] for m in METHODS}
    for index, (_, _, method) in enumerate(jobs):
        split[method].append(index)
    connects, syns = ([jobs[i][:2] for i in split[m]] for m in METHODS)
    by_connect, by_syn = await asyncio.gather(
        _connect_all(connects, timeout, concurrency, limiter),
        _syn_scan_all(syns, timeout, syn_rate),
    )
    outcomes: list[AddressOutcome | None] = [None] * len(jobs)
    for indices, found in ((split["connect"], by_connect), (split["syn"], by_syn)):
        for index, outcome in zip(indices, found, strict=True):
            outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


async def sweep(
    addresses: Iterable[str],
    port: int,
    timeout: float,
    concurrency: int,
    *,
    name: str = "",
    cidr: str = "",
    method: Method = "connect",
    syn_rate: float = DEFAULT_SYN_RATE,
) -> PrefixResult:
    """Probe every address on `port` and count the results: TCP connects, at most
    `concurrency` at once, or (`method="syn"`) one SYN each, `syn_rate` a second.

    Each connect is closed as soon as it completes; its outcome is `ok` or the TCP step's code
    from the project's classifier (`tcp_timeout`, `tcp_refused`, ...), and a SYN's answer maps
    to the same codes.
    """
    _check_sweep(port, timeout, concurrency, method)
    jobs = [(_checked(address), port, method) for address in addresses]
    return summarize(name, cidr, await _probe_all(jobs, timeout, concurrency, syn_rate), method)


async def probe_prefixes(
    prefixes: Sequence[PrefixLike],
    seed: bytes | str,
    cycle: int,
    timeout: float,
    concurrency: int,
    syn_rate: float = DEFAULT_SYN_RATE,
    limiter: asyncio.Semaphore | None = None,
) -> list[PrefixResult]:
    """One cycle of prefix sampling: sample every prefix for `cycle`, sweep, one result each.

    All connect-method prefixes share one pool of `concurrency` connects, all syn-method ones
    one scan at `syn_rate` SYNs a second, the two side by side; the samples are interleaved, so
    that a blackholed prefix (every probe a timeout) does not hold the others up and no single
    network gets the whole burst. In a cycle `limiter` is the prober's concurrency bound.
    """
    per_prefix: list[list[tuple[str, int, Method]]] = []
    for prefix in prefixes:
        _check_sweep(prefix.port, timeout, concurrency, prefix.method)
        addresses = sample(_network(prefix.cidr), prefix.sample, seed, cycle)
        per_prefix.append([(address, prefix.port, prefix.method) for address in addresses])
    # Round-robin over the prefixes (each keeps its sample order); `owner` remembers whose
    # job each one is.
    tagged = [[(owner, job) for job in jobs] for owner, jobs in enumerate(per_prefix)]
    order = [item for column in itertools.zip_longest(*tagged) for item in column if item]
    jobs = [job for _, job in order]
    outcomes = await _probe_all(jobs, timeout, concurrency, syn_rate, limiter)
    grouped: list[list[AddressOutcome]] = [[] for _ in per_prefix]
    for (owner, _), outcome in zip(order, outcomes, strict=True):
        grouped[owner].append(outcome)
    return [
        summarize(prefix.name, _network(prefix.cidr).with_prefixlen, found, prefix.method)
        for prefix, found in zip(prefixes, grouped, strict=True)
    ]


def among_responsive(test: PrefixResult, control: PrefixResult) -> PrefixResult:
    """The test vantage's result restricted to the addresses that answered at the control.

    Most of a cloud prefix is unused space that answers nowhere; only an address the control
    vantage reached says anything about blocking at the test vantage. Both results must come
    from the same sample (same seed, prefix and cycle).
    """
    answered = {o.address for o in control.outcomes if o.reachable}
    kept = [o for o in test.outcomes if o.address in answered]
    return summarize(test.name, test.cidr, kept, test.method)


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m measure.prefixes",
        description="Sample one prefix for one cycle, probe the sample, print JSON.",
    )
    parser.add_argument("--cidr", required=True, help="the prefix, e.g. 198.18.16.0/20")
    parser.add_argument("--port", type=int, required=True, help="TCP port to connect to")
    parser.add_argument("--name", default="prefix", help="a label for the output")
    parser.add_argument("--sample", type=int, default=16, help="addresses per cycle")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="the seed shared by vantages")
    parser.add_argument("--cycle", type=int, help="cycle number (default: from --interval)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per cycle")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per connect")
    parser.add_argument("--concurrency", type=int, default=256, help="connects at once")
    parser.add_argument(
        "--method", choices=METHODS, default="connect", help="TCP connects, or a SYN scan (root)"
    )
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_SYN_RATE, help="SYNs per second (--method syn)"
    )
    parser.add_argument("--outcomes", action="store_true", help="print every address's result")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; exit 0 on a finished sweep, 2 on bad arguments (or a SYN
    scan without CAP_NET_RAW)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        cycle = args.cycle if args.cycle is not None else cycle_number(time.time(), args.interval)
        prefix = Prefix(args.name, args.cidr, args.port, args.sample, args.method)
        [result] = asyncio.run(
            probe_prefixes([prefix], args.seed, cycle, args.timeout, args.concurrency, args.rate)
        )
    except ValueError as exc:
        parser.error(str(exc))
    except PermissionError:
        parser.error("--method syn needs CAP_NET_RAW (run as root, or use --method connect)")
    print(json.dumps({"cycle": cycle, **result.to_json(outcomes=args.outcomes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
