"""Push mode into a real VictoriaMetrics (Debian's victoria-metrics on loopback, its own temp
storage): what docs/operators.md and docs/reliability.md say of it holds. NaN samples are
dropped at ingestion (the vantage gauges that read NaN never exist there), and a backlog
sample hours older than one already stored is accepted (no out-of-order window)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from array import array
from pathlib import Path

import aiohttp
import pytest

from agent.sinks.remote_write.snapshot import Snapshot
from agent.sinks.remote_write.wire import HEADERS, encode_write_request

VM = shutil.which("victoria-metrics")
pytestmark = pytest.mark.skipif(VM is None, reason="victoria-metrics not installed")

SERIES = (
    (("__name__", "reachprobe_vantage_connectivity_up"), ("instance", "vm-test")),
    (("__name__", "reachprobe_target_up"), ("instance", "vm-test")),
)


async def test_victoria_metrics_drops_nan_and_takes_an_old_backlog(tmp_path: Path) -> None:
    assert VM is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        VM, f"-storageDataPath={tmp_path / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=1", stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "vm.log").open("ab"),
    )  # fmt: skip
    now = int(time.time() * 1000)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            # The newest first, then a sample 3 h older: a replayed backlog behind it.
            for stamp, up in ((now, 1.0), (now - 3 * 3600 * 1000, 0.0)):
                values = array("d", [float("nan"), up])
                body = encode_write_request([Snapshot(stamp, SERIES, values)])
                async with session.post(f"{base}/api/v1/write", data=body, headers=HEADERS) as r:
                    assert r.status == 204
            exported: dict[str, list[dict]] = {}
            for _ in range(50):  # ingested samples become searchable within a second or two
                async with session.get(f"{base}/internal/force_flush") as r:
                    assert r.status == 200
                for (_, name), _ in SERIES:
                    params = {"match[]": name, "start": str(now // 1000 - 4 * 3600)}
                    async with session.get(f"{base}/api/v1/export", params=params) as r:
                        text = (await r.text()).strip()
                    exported[name] = [json.loads(line) for line in text.splitlines()]
                ups = exported["reachprobe_target_up"]
                if ups and len(ups[0]["timestamps"]) == 2:
                    break
                await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        await proc.wait()
    assert exported["reachprobe_vantage_connectivity_up"] == []
    [up] = exported["reachprobe_target_up"]
    assert up["timestamps"] == [now - 3 * 3600 * 1000, now]
    assert up["values"] == [0, 1]
