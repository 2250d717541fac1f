"""The scheduler's promises, observed from the server side: the global concurrency bound holds
for open connections, and runs of one target never overlap even when a cycle overruns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agent.config import Config, parse_config
from agent.once import measure_once
from agent.scheduler import Scheduler
from agent.sinks.prometheus import PrometheusSink
from measure.prober import Prober


@dataclass
class SilentServer:
    """Accepts connections and never answers; records how many were open at once."""

    open_now: int = 0
    most_open: int = 0
    accepted: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        try:
            await reader.read()  # until the client closes
        finally:
            self.open_now -= 1
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    state = SilentServer()
    state.server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    yield state
    state.server.close()
    for writer in state.writers:
        writer.close()


def config(port: int, targets: int, concurrency: int, interval: str = "10s") -> Config:
    return parse_config(
        {
            "agent": {
                "timeout": "300ms",
                "interval": interval,
                "concurrency": concurrency,
                "jitter": "0s",
                "listen": None,
            },
            "targets": [
                {"name": f"t{i}", "host": "127.0.0.1", "port": port, "tls": True}
                for i in range(targets)
            ],
        },
        "test.yaml",
    )


async def test_concurrency_bounds_open_connections(silent: SilentServer) -> None:
    cfg = config(silent.port, targets=8, concurrency=2)
    reports = (await measure_once(cfg)).cycle.reports
    assert {r.verdict for r in reports} == {"tls_blocking"}
    # Every target connected three times (the handshake, its confirmation on a fresh
    # connection, and the innocuous-SNI repeat) ...
    assert silent.accepted == 24
    # ... but never more than `concurrency` connections were open at once.
    assert silent.most_open <= 2


async def test_a_slow_cycle_does_not_overlap_the_next(silent: SilentServer) -> None:
    # A cycle takes two timeouts (handshake and SNI repeat), longer than the interval.
    cfg = config(silent.port, targets=1, concurrency=64, interval="300ms")
    scheduler = Scheduler(cfg, [PrometheusSink()], None)
    task = asyncio.ensure_future(scheduler.run())
    try:
        async with asyncio.timeout(15):
            while scheduler.cycles < 3:  # noqa: ASYNC110 - polling the scheduler's counter
                await asyncio.sleep(0.05)
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 5)
    assert silent.most_open == 1
    assert silent.accepted >= 6


async def test_a_bug_in_one_target_keeps_the_others_results(
    silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(silent.port, targets=3, concurrency=4)
    real_probe = Prober.probe

    async def buggy(self: Prober, target):  # fault injection: no real input triggers a bug
        if target.name == "t1":
            raise RuntimeError("boom")
        return await real_probe(self, target)

    monkeypatch.setattr(Prober, "probe", buggy)
    reports = (await measure_once(cfg)).cycle.reports
    assert [r.verdict for r in reports] == ["tls_blocking", "inconclusive", "tls_blocking"]
    assert reports[1].error == "internal error: RuntimeError('boom')"
    assert reports[1].to_json()["error"].startswith("internal error")
    metrics = PrometheusSink()
    for report in reports:
        metrics.observe(report)
    assert (
        metrics.registry.get_sample_value(
            "reachprobe_target_verdict", {"target": "t1", "verdict": "inconclusive"}
        )
        == 1
    )


async def test_health_is_on_monotonic_time_not_the_wall_clock(
    silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = Scheduler(config(silent.port, 1, 4, interval="300ms"), [], None)
    try:
        # The wall clock jumps an hour ahead (or a day back): no stall, no false life.
        for jump in (3600.0, -86400.0):
            wall = time.time() + jump
            monkeypatch.setattr(time, "time", lambda wall=wall: wall)
            ok, why = scheduler.healthy()
            assert ok, why
            assert why == "no cycle finished yet (0s since start)"
    finally:
        await scheduler.prober.aclose()
