"""Push mode end to end: a real Prometheus remote-write receiver, down for a minute, loses nothing.

Debian's prometheus runs on 127.0.0.1 with `--web.enable-remote-write-receiver` and its own
temp storage (never the system service). The sink publishes a snapshot every second; after 10 s
the receiver is stopped for 60 s and started again on the same storage; the sink keeps
publishing, retries with backoff, and delivers the backlog. Then every published sample must be
in Prometheus: counted with count_over_time over the whole run and over the outage alone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from agent.config import parse_config
from agent.sinks.remote_write import RemoteWriteSink
from tests.loopback_prometheus import PROMETHEUS, LoopbackPrometheus

OUTAGE_SECONDS = 60.0

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")


@pytest.mark.timeout(240)
async def test_receiver_down_for_a_minute_loses_no_sample(tmp_path: Path) -> None:
    receiver = LoopbackPrometheus(tmp_path)
    await receiver.start()
    config = parse_config(
        {
            "agent": {"vantage": "push-test"},
            "remote_write": {
                "url": f"{receiver.base}/api/v1/write",
                "interval": "1s",
                "timeout": "2s",
                "min_backoff": "500ms",
                "max_backoff": "4s",
            },
        },
        "test.yaml",
    ).remote_write
    assert config is not None
    registry = CollectorRegistry()
    tick = Gauge("reachprobe_test_tick", "number of the publish", registry=registry)
    sink = RemoteWriteSink(registry, config)
    await sink.start()
    published: list[int] = []  # the samples' timestamps, in ms
    try:

        async def publish_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                tick.set(len(published))
                sink.snapshot(time.time())
                assert sink.last_snapshot is not None
                published.append(sink.last_snapshot.timestamp_ms)
                await asyncio.sleep(1.0)

        await publish_for(10)
        await receiver.stop()
        outage_start = int(time.time() * 1000)
        await publish_for(OUTAGE_SECONDS)
        outage_end = int(time.time() * 1000)
        await receiver.start()
        await publish_for(10)
    finally:
        await sink.aclose(timeout=30)
    try:
        selector = 'reachprobe_test_tick{job="reachprobe",instance="push-test"}'
        now = time.time()
        window = int(now - published[0] / 1000) + 5
        total = await receiver.query(f"count_over_time({selector}[{window}s])", now)
        assert total == len(published)
        # Samples stamped while the receiver was down (a closed range, as Prometheus 2 has it).
        in_outage = [t for t in published if outage_start <= t <= outage_end]
        assert len(in_outage) >= OUTAGE_SECONDS - 2
        outage = await receiver.query(
            f"count_over_time({selector}[{outage_end - outage_start}ms])", outage_end / 1000
        )
        assert outage == len(in_outage)
        n = len(published)
        assert await receiver.query(f"sum_over_time({selector}[{window}s])", now) == n * (n - 1) / 2
        failures = registry.get_sample_value("reachprobe_remote_write_failed_sends_total")
        assert failures, "the outage was never noticed"
        dropped = registry.get_sample_value(
            "reachprobe_remote_write_dropped_samples_total", {"reason": "buffer_full"}
        )
        assert dropped == 0
    finally:
        await receiver.stop()
