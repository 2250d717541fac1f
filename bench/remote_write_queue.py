"""Benchmark: the disk-backed remote-write queue (agent/sinks/remote_write/disk.py): bytes per
sample on disk, the cost of a push (write + fsync, once per cycle), the replay rate after a
restart (reopen and scan, then take and encode every batch), and what a day-long receiver
outage costs on disk for 100 and 1,000 targets at the default 60 s interval.

The registry is shaped like the agent's: 24 series per target (docs/operators.md, Scaling)
under realistic names and label values. Run: `python bench/remote_write_queue.py`
(`--snapshots` per size, `--dir` for the filesystem to measure on; default a temp dir).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from agent.sinks.remote_write.disk import SUFFIX, DiskQueue
from agent.sinks.remote_write.snapshot import snapshot_registry

IDENTITY = {"job": "reachprobe", "instance": "ru-moscow-volunteer-1"}
SERIES_PER_TARGET = 24
DAY_CYCLES = 24 * 3600 // 60
STEPS = ("dns", "tcp", "tls", "http")
RESULTS = ("ok", "dns_nxdomain", "tcp_reset", "tls_timeout", "http_blockpage", "skipped")


def registry_for(targets: int) -> tuple[CollectorRegistry, Callable[[], None]]:
    """24 series per target: per-step results, durations and success, verdict, up; and a
    function that moves them on by a cycle (counters grow, durations vary, as measured)."""
    registry = CollectorRegistry()
    results = Gauge("reachprobe_step_results_total", "", ["target", "step", "result"],
                    registry=registry)  # fmt: skip
    success = Gauge("reachprobe_step_success", "", ["target", "step"], registry=registry)
    duration = Gauge("reachprobe_step_last_duration_seconds", "", ["target", "step"],
                     registry=registry)  # fmt: skip
    verdict = Gauge("reachprobe_target_verdict", "", ["target", "verdict"], registry=registry)
    up = Gauge("reachprobe_target_up", "", ["target"], registry=registry)
    for i in range(targets):
        name = f"news-site-{i:04d}.example"
        for n, step in enumerate(STEPS):
            for result in RESULTS[:3]:
                results.labels(name, step, result).set(i + n)
            success.labels(name, step).set(1)
            duration.labels(name, step).set(0.01 * n)
        for v in ("reachable", "dns_blocking", "tcp_ip_blocking"):
            verdict.labels(name, v).set(v == "reachable")
        up.labels(name).set(1)
    rng = random.Random(1)

    def cycle() -> None:
        for i in range(targets):
            name = f"news-site-{i:04d}.example"
            for step in STEPS:
                results.labels(name, step, RESULTS[0]).inc()
                duration.labels(name, step).set(rng.lognormvariate(-3, 0.5))

    return registry, cycle


def measure(targets: int, snapshots: int, directory: Path) -> None:
    registry, cycle = registry_for(targets)
    stamp = [1_700_000_000.0]
    queue = DiskQueue(directory, 1 << 40, 10**9, lambda *_: None, lambda: stamp[0])
    previous = None
    snap_seconds = push_seconds = 0.0
    for n in range(snapshots):
        cycle()
        started = time.perf_counter()
        previous = snapshot_registry(registry, IDENTITY, stamp[0] + 60 * n, previous)
        pushed = time.perf_counter()
        queue.push(previous)
        snap_seconds += pushed - started
        push_seconds += time.perf_counter() - pushed
    snap_seconds /= snapshots
    push_seconds /= snapshots
    queue.close()
    assert previous is not None
    samples = len(previous) * snapshots
    on_disk = sum(p.stat().st_size for p in directory.glob(f"*{SUFFIX}"))
    per_sample = on_disk / samples
    started = time.perf_counter()
    replay = DiskQueue(directory, 1 << 40, 10**9, lambda *_: None, lambda: stamp[0])
    scanned = time.perf_counter() - started
    sent = 0
    while len(replay):
        batch = replay.take(10_000)
        sent += len(replay.encode(batch))
        replay.ack(batch)
    replay_seconds = time.perf_counter() - started
    replay.close()
    day = per_sample * len(previous) * DAY_CYCLES
    print(
        f"{targets} targets ({len(previous)} series), {snapshots} snapshots: "
        f"{per_sample:.1f} bytes per sample on disk, "
        f"snapshot {snap_seconds * 1000:.1f} ms + push (encode, write, fsync) "
        f"{push_seconds * 1000:.1f} ms, "
        f"replay {samples / replay_seconds / 1e6:.2f} M samples/s "
        f"(reopen and scan {scanned:.2f} s, {sent / samples:.1f} bytes/sample on the wire); "
        f"a day-long outage at 60 s: {day / 2**20:.0f} MiB on disk"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=60, help="snapshots (cycles) per size")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the segments")
    args = parser.parse_args()
    for targets in (100, 1000):
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            measure(targets, args.snapshots, Path(directory))


if __name__ == "__main__":
    main()
