"""Push mode across restarts (issue 26): a real `reachprobe run` process with the disk queue,
a real Prometheus remote-write receiver (tests/loopback_prometheus.py) that is down while the
agent is killed (SIGKILL) or stopped (SIGTERM), restarted, and then brought back.

Every cycle from before the crash must reach the receiver; with an outage longer than the
queue's byte bound the oldest are dropped and counted and the newest kept; SIGTERM returns
within 2 s while the receiver is down. Short intervals and a small bound keep it fast.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agent_process import RunningAgent, start_agent, until, write_yaml
from tests.loopback_prometheus import PROMETHEUS, LoopbackPrometheus

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed"),
    pytest.mark.timeout(180),
]

VANTAGE = "restart-test"
SELECTOR = f'reachprobe_last_cycle_timestamp_seconds{{job="reachprobe",instance="{VANTAGE}"}}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_config(tmp_path: Path, receiver: LoopbackPrometheus, **queue: Any) -> Path:
    dns = {"type": "udp", "servers": ["127.0.0.1:9"]}
    data = {
        "agent": {"vantage": VANTAGE, "listen": f"127.0.0.1:{free_port()}",
                  "interval": "500ms", "timeout": "200ms", "jitter": "0s"},
        "resolvers": {"test": dns, "control": dns},
        "targets": [{"name": "closed", "tcp": "127.0.0.1:9"}],
        "remote_write": {"url": f"{receiver.base}/api/v1/write", "interval": "200ms",
                         "timeout": "1s", "min_backoff": "200ms", "max_backoff": "500ms",
                         "queue": {"path": str(tmp_path / "queue"), **queue}},
    }  # fmt: skip
    return write_yaml(tmp_path / "agent.yaml", data)


async def start(config: Path) -> RunningAgent:
    host, port = yaml.safe_load(config.read_text())["agent"]["listen"].split(":")  # noqa: ASYNC240
    return await start_agent(config, (host, int(port)), extra=("--log-level", "info"))


async def cycles(agent: RunningAgent) -> int:
    samples = await agent.samples()
    return int(samples.get(("reachprobe_cycle_duration_seconds_count", ()), 0))


async def received(receiver: LoopbackPrometheus, since: float) -> list[tuple[float, float]]:
    return await receiver.samples(SELECTOR, time.time() - since + 10, time.time())


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_cycles_queued_before_a_crash_or_stop_reach_the_receiver(
    tmp_path: Path, how: str
) -> None:
    receiver = LoopbackPrometheus(tmp_path)  # down: not started yet
    config = agent_config(tmp_path, receiver)
    began = time.time()
    first = await start(config)
    try:
        await first.wait_cycles(5)
        if how == "SIGKILL":
            done = await cycles(first)
            first.proc.send_signal(signal.SIGKILL)
            await first.proc.wait()
        else:
            code, took = await first.stop()
            assert code == 0, first.log
            assert took < 2.0, f"SIGTERM took {took:.1f}s with the receiver down"
            assert "kept on disk for the next start" in first.log
            done = first.log.count(" done in ")
    finally:
        await first.kill()
    stopped = time.time()
    second = await start(config)
    try:
        await second.wait_cycles(2)
        assert "from before the restart queued" in second.log
        await receiver.start()

        async def before_the_crash() -> list[tuple[float, float]]:
            got = [s for s in await received(receiver, began) if s[0] <= stopped]
            return got if len(got) >= done else []

        got = await until(before_the_crash, f"the {done} cycles from before the {how}", 30)
        code, took = await second.stop()
        assert code == 0
    finally:
        await second.kill()
        await receiver.stop()
    # Every cycle of the first run, each once (SIGKILL may land after one more cycle queued).
    assert done <= len(got) <= done + (how == "SIGKILL")
    assert len({value for _, value in got}) == len(got)
    # Stamped at measurement: a cycle's samples carry its end, the value of this gauge.
    assert all(abs(ts - value) < 0.002 for ts, value in got)


async def test_an_outage_longer_than_the_bound_keeps_the_newest_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    receiver = LoopbackPrometheus(tmp_path)
    config = agent_config(tmp_path, receiver, max_bytes="64KiB")
    began = time.time()
    agent = await start(config)
    try:

        async def over_the_bound() -> float:
            samples = await agent.samples()
            return samples.get(
                ("reachprobe_remote_write_dropped_samples_total", (("reason", "buffer_full"),)), 0
            )

        await until(over_the_bound, "the queue to pass its 64 KiB bound", 60, agent)
        on_disk = sum(p.stat().st_size for p in (tmp_path / "queue").glob("*.seg"))
        assert on_disk <= (64 << 10) + (4 << 10)  # the bound, within one segment
        done = await cycles(agent)
        agent.proc.send_signal(signal.SIGKILL)
        await agent.proc.wait()
    finally:
        await agent.kill()
    stopped = time.time()
    await receiver.start()
    agent = await start(config)
    try:

        async def the_backlog() -> list[tuple[float, float]]:
            got = [s for s in await received(receiver, began) if s[0] <= stopped]
            await_more = got and got[-1][0] < stopped - 1.5  # the last of the backlog not yet in
            return [] if not got or await_more else got

        got = await until(the_backlog, "the kept backlog", 30)
    finally:
        await agent.kill()
        await receiver.stop()
    # Fewer than all cycles, and what is kept is the newest: no gap before the crash.
    assert 0 < len(got) < done
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert max(gaps, default=0) < 1.5, gaps
