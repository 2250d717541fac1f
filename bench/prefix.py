"""Benchmark: prefix sampling speed, in addresses per second, on loopback, by method.

One responder process (its CPU is not charged to the sweep) listens on 0.0.0.0:PORT, which
answers every address of 127.0.0.0/8, and accepts and closes connections in a blocking loop; the
benchmark then samples `--sample` addresses of `--cidr` (default 127.0.0.0/16) and probes all
of them with `measure.prefixes.sweep`, `--rounds` times (a fresh sample each round, as in
successive cycles), and prints wall time, CPU time and addresses per second per round: by TCP
connect, then by SYN scan (`--method syn`, raw sockets; the kernel answers the SYNs itself and
its RSTs to the SYN-ACKs never reach the accept loop) at `--rate` SYNs per second, by default
the configuration's ceiling so that the figure is the scan's own speed.

A wildcard listener must not be reachable from the host's network, so the whole benchmark runs
in a private network namespace of its own (`unshare --net`, which needs root), holding only a
loopback interface: nothing it does can leave the machine.

The responder is a bare accept loop, not `simlab web --mode silent`: simlab's asyncio stream
server costs about 0.5 ms per connection and caps the benchmark near 2,000 addresses per
second, measuring the responder rather than the sweep.

    sudo .venv/bin/python bench/prefix.py                  # 5,000 addresses, 5 rounds
    sudo .venv/bin/python bench/prefix.py --sample 20000 --concurrency 512
    sudo .venv/bin/python bench/prefix.py --method syn --rate 1000   # the default rate
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from measure.plan import METHODS  # noqa: E402
from measure.prefixes import sample, sweep  # noqa: E402

INSIDE = "REACHPROBE_BENCH_PRIVATE_NETNS"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cidr", default="127.0.0.0/16", help="a prefix inside 127.0.0.0/8")
    parser.add_argument("--sample", type=int, default=5000, help="addresses per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256, help="connects in flight")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per connect")
    parser.add_argument(
        "--method", choices=(*METHODS, "both"), default="both", help="how addresses are probed"
    )
    parser.add_argument("--rate", type=float, default=100_000.0, help="SYNs per second (syn)")
    args = parser.parse_args()
    if not args.cidr.startswith("127."):
        parser.error("--cidr must be inside 127.0.0.0/8: the benchmark stays on loopback")
    if args.rounds < 1 or args.sample < 1:
        parser.error("--rounds and --sample must be at least 1")
    return args


def _reexec_in_private_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit(
            "bench/prefix.py needs root and unshare(1): it runs in a private network namespace"
        )
    env = {**os.environ, INSIDE: "1"}
    argv = ["unshare", "--net", "--", sys.executable, *sys.argv]
    sys.exit(subprocess.run(argv, env=env, check=False).returncode)


def _respond(listener: socket.socket) -> None:
    # Accept and close at once: a sweep (or a `tcp:` target) only needs its connect() to complete.
    while True:
        connection, _ = listener.accept()
        connection.close()


def start_responder() -> tuple[multiprocessing.Process, int]:
    """A process accepting on a free port of 0.0.0.0; returns it and the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 0))
    listener.listen(4096)
    process = multiprocessing.get_context("fork").Process(
        target=_respond, args=(listener,), daemon=True
    )
    process.start()
    port = listener.getsockname()[1]
    listener.close()
    return process, port


def main() -> None:
    args = _arguments()
    if os.environ.get(INSIDE) != "1":
        _reexec_in_private_namespace()
    subprocess.run(["ip", "link", "set", "dev", "lo", "up"], check=True, timeout=10)
    responder, port = start_responder()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    try:
        for method in METHODS if args.method == "both" else (args.method,):
            _rounds(args, port, method)
    finally:
        responder.terminate()
        responder.join(timeout=10)


def _rounds(args: argparse.Namespace, port: int, method: str) -> None:
    how = f"concurrency {args.concurrency}" if method == "connect" else f"{args.rate:g} SYNs/s"
    print(
        f"\n{method}: {args.sample} addresses of {args.cidr} per round, port {port}, "
        f"{how}, timeout {args.timeout:g}s"
    )
    header = ("round", 5), ("reachable", 10), ("wall s", 8), ("cpu s", 8), ("addr/s", 9)
    print(" ".join(f"{title:>{width}}" for title, width in header), f"{'addr/cpu-s':>11}")
    rates: list[float] = []
    for round_number in range(args.rounds):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        addresses = sample(args.cidr, args.sample, "bench", round_number)
        probing = sweep(
            addresses, port, args.timeout, args.concurrency, method=method, syn_rate=args.rate
        )
        result = asyncio.run(probing)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        rates.append(result.sampled / wall)
        print(
            f"{round_number:>5} {result.reachable:>10} {wall:>8.3f} {cpu:>8.3f} "
            f"{result.sampled / wall:>9.0f} {result.sampled / cpu:>11.0f}"
        )
        if result.reachable != result.sampled:
            print(f"      not all reachable: {dict(result.results)}")
    median = statistics.median(rates)
    print(f"{method} median: {median:.0f} addresses/second (sampling + sweep, wall time)")


if __name__ == "__main__":
    main()
