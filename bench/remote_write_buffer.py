"""Benchmark: memory per buffered sample in push mode, and what an outage of a day costs.

Fills the remote-write buffer (agent/sinks/remote_write/buffer.py) as a receiver that is down
would: one snapshot of a registry per cycle, the series set unchanged between cycles. Memory is
measured with tracemalloc (Python allocations: the values, the per-snapshot bookkeeping), and the
time to take and encode the snapshots for sending. Run: `python bench/remote_write_buffer.py`.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from prometheus_client import CollectorRegistry, Gauge

from agent.sinks.remote_write.buffer import SampleBuffer
from agent.sinks.remote_write.snapshot import snapshot_registry
from agent.sinks.remote_write.wire import encode_write_request

IDENTITY = {"job": "reachprobe", "instance": "bench"}
TIMED_SNAPSHOTS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2300, help="series per snapshot")
    parser.add_argument("--snapshots", type=int, default=1440, help="snapshots (cycles)")
    args = parser.parse_args()
    registry = CollectorRegistry()
    gauge = Gauge("reachprobe_bench", "one series per label value", ["target"], registry=registry)
    for i in range(args.series):
        gauge.labels(f"target-{i}").set(i)
    buffer = SampleBuffer(max_samples=args.series * args.snapshots)
    tracemalloc.start()
    previous = snapshot_registry(registry, IDENTITY, 0.0)
    before = tracemalloc.get_traced_memory()[0]
    for n in range(args.snapshots):
        previous = snapshot_registry(registry, IDENTITY, 60.0 * n, previous)
        buffer.push(previous)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Timed apart from the memory measurement: tracemalloc slows allocation down.
    started = time.perf_counter()
    for n in range(TIMED_SNAPSHOTS):
        previous = snapshot_registry(registry, IDENTITY, 60.0 * n, previous)
    snap_seconds = (time.perf_counter() - started) / TIMED_SNAPSHOTS
    samples = buffer.samples
    print(f"{args.snapshots} snapshots x {args.series} series = {samples} samples buffered")
    print(f"memory: {used / 2**20:.1f} MiB, {used / samples:.1f} bytes per sample")
    print(f"one snapshot (publish, on the event loop): {snap_seconds * 1000:.1f} ms")
    started = time.perf_counter()
    sent = 0
    while len(buffer):
        body = encode_write_request(buffer.take(10_000))
        sent += len(body)
    encode_seconds = time.perf_counter() - started
    print(
        f"encoding the backlog in 10000-sample requests: {encode_seconds:.1f} s, "
        f"{sent / 2**20:.1f} MiB on the wire ({sent / samples:.1f} bytes per sample)"
    )


if __name__ == "__main__":
    main()
