"""Remote-write push mode against a real aiohttp receiver on loopback (TLS with trustme certs).

The receiver decodes what it gets (snappy + protobuf) and answers as told: 200, 503 or 400.
The end-to-end test against a real Prometheus is test_remote_write_prometheus.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.config import ConfigError, RemoteWriteConfig, parse_config
from agent.sinks.prometheus import PrometheusSink
from agent.sinks.remote_write import RemoteWriteSink
from agent.sinks.remote_write.buffer import SampleBuffer
from agent.sinks.remote_write.snapshot import Snapshot, snapshot_registry
from agent.sinks.remote_write.wire import decode_write_request, encode_write_request
from measure.report import CycleReport

LAST_CYCLE = "reachprobe_last_cycle_timestamp_seconds"


@dataclass
class Receiver:
    """A remote-write endpoint that records every request."""

    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)
    series: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = field(default_factory=dict)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        if self.status == 200:
            for labels, points in decode_write_request(await request.read()).items():
                self.series.setdefault(labels, []).extend(points)
        return web.Response(status=self.status, text="" if self.status == 200 else "no")

    def values(self, name: str) -> list[float]:
        """Values received for the series named `name`, in timestamp order."""
        points = [
            p for labels, pts in self.series.items() if ("__name__", name) in labels for p in pts
        ]
        return [v for _, v in sorted(points)]


@dataclass
class Pki:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return Pki(ca_file, server)


@pytest.fixture
async def receiver(pki: Pki) -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/api/v1/write", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server)
    await site.start()
    port = runner.addresses[0][1]
    recv.url = f"https://127.0.0.1:{port}/api/v1/write"
    yield recv
    await runner.cleanup()


def rw_config(tmp_path: Path, url: str, **extra: Any) -> RemoteWriteConfig:
    data = {
        "url": url,
        "interval": "100ms",
        "timeout": "2s",
        "min_backoff": "50ms",
        "max_backoff": "200ms",
        **extra,
    }
    config = parse_config(
        {"agent": {"vantage": "ru-push"}, "remote_write": data}, "test.yaml", tmp_path
    )
    assert config.remote_write is not None
    return config.remote_write


def registry_with(series: int = 3) -> tuple[CollectorRegistry, Gauge]:
    registry = CollectorRegistry()
    gauge = Gauge("reachprobe_target_up", "up", ["target"], registry=registry)
    for i in range(series):
        gauge.labels(f"t{i}").set(1)
    return registry, gauge


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_snapshot_labels_sorted_with_identity_and_one_timestamp() -> None:
    registry, _ = registry_with(2)
    snap = snapshot_registry(registry, {"job": "reachprobe", "instance": "ru-push"}, 1700.5)
    assert snap.timestamp_ms == 1_700_500
    assert all(list(labels) == sorted(labels) for labels in snap.series)
    assert (
        ("__name__", "reachprobe_target_up"),
        ("instance", "ru-push"),
        ("job", "reachprobe"),
        ("target", "t0"),
    ) in snap.series
    again = snapshot_registry(registry, {"job": "j", "instance": "i"}, 1701, previous=snap)
    same = snapshot_registry(registry, {"job": "reachprobe", "instance": "ru-push"}, 1701, snap)
    assert same.series is snap.series  # a steady series set costs no new label tuples
    assert again.series is not snap.series


def test_snapshot_leaves_out_created_series() -> None:
    registry = CollectorRegistry()
    Counter("reachprobe_things", "things", registry=registry).inc(2)
    snap = snapshot_registry(registry, {"job": "j", "instance": "i"}, 1.0)
    assert [dict(labels)["__name__"] for labels in snap.series] == ["reachprobe_things_total"]
    assert list(snap.values) == [2.0]


def test_encoding_round_trips_in_order() -> None:
    a = Snapshot(1000, ((("__name__", "x"),), (("__name__", "y"),)), array("d", [1, 2]))
    b = Snapshot(2000, a.series, array("d", [3, float("inf")]))
    decoded = decode_write_request(encode_write_request([a, b]))
    assert decoded == {
        (("__name__", "x"),): [(1000, 1.0), (2000, 3.0)],
        (("__name__", "y"),): [(1000, 2.0), (2000, float("inf"))],
    }


def test_buffer_drops_oldest_whole_snapshots() -> None:
    buffer = SampleBuffer(max_samples=10)
    snaps = [Snapshot(i, ((("a", "b"),),) * 4, array("d", [i] * 4)) for i in range(5)]
    dropped = [buffer.push(s) for s in snaps]
    assert dropped == [0, 0, 4, 4, 4]
    assert buffer.samples == 8
    batch = buffer.take(max_samples=5)
    assert [s.timestamp_ms for s in batch] == [3]
    assert buffer.put_back(batch) == 0
    assert [s.timestamp_ms for s in buffer.take(100)] == [3, 4]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remote_write\.bearer_token_file: file"):
        rw_config(tmp_path, "https://127.0.0.1/", bearer_token_file="missing")
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match="not both"):
        rw_config(
            tmp_path,
            "https://127.0.0.1/",
            bearer_token_file="pw",
            basic_auth={"username": "u", "password_file": "pw"},
        )
    with pytest.raises(ConfigError, match=r"remote_write\.interval: must be greater than zero"):
        rw_config(tmp_path, "https://127.0.0.1/", interval="0s")
    with pytest.raises(ConfigError, match=r"remote_write\.url"):
        rw_config(tmp_path, "ftp://127.0.0.1/")


async def test_basic_auth_over_tls_with_ca_file(
    tmp_path: Path, receiver: Receiver, pki: Pki
) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    config = rw_config(
        tmp_path,
        receiver.url,
        tls={"ca_file": str(pki.ca_file)},
        basic_auth={"username": "agent", "password_file": "password"},
    )
    assert config.instance == "ru-push"
    registry, _ = registry_with()
    sink = RemoteWriteSink(registry, config)
    await sink.start()
    sink.snapshot(time.time())
    await until(lambda: receiver.series)
    await sink.aclose()
    assert receiver.requests[0]["Authorization"] == "Basic YWdlbnQ6czNjcmV0"
    assert receiver.requests[0]["Content-Encoding"] == "snappy"
    assert receiver.requests[0]["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert "reachprobe" not in receiver.requests[0]["User-Agent"]
    labels = dict(next(k for k in receiver.series if ("target", "t1") in k))
    assert labels == {
        "__name__": "reachprobe_target_up",
        "job": "reachprobe",
        "instance": "ru-push",
        "target": "t1",
    }


async def test_bearer_token(tmp_path: Path, receiver: Receiver, pki: Pki) -> None:
    (tmp_path / "token").write_text("tok-123\n")
    config = rw_config(
        tmp_path, receiver.url, tls={"ca_file": str(pki.ca_file)}, bearer_token_file="token"
    )
    registry, _ = registry_with()
    sink = RemoteWriteSink(registry, config)
    sink.snapshot(time.time())
    await sink.aclose()
    assert receiver.requests[0]["Authorization"] == "Bearer tok-123"
    assert receiver.values("reachprobe_target_up") == [1.0, 1.0, 1.0]


async def test_a_replacing_sink_counts_in_the_same_series(
    tmp_path: Path, receiver: Receiver, pki: Pki
) -> None:
    registry, _ = registry_with()
    config = rw_config(tmp_path, receiver.url, tls={"ca_file": str(pki.ca_file)})
    for _ in range(2):  # as on a config reload: the old sink closed, a new one on the registry
        sink = RemoteWriteSink(registry, config)
        sink.snapshot(time.time())
        await sink.aclose()
    assert len(receiver.requests) == 2
    assert counter(registry, "reachprobe_remote_write_sent_samples_total") > 6


async def test_untrusted_receiver_is_retried_not_dropped(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = rw_config(tmp_path, receiver.url)  # the system store does not know the test CA
    registry, _ = registry_with()
    sink = RemoteWriteSink(registry, config)
    await sink.start()
    sink.snapshot(time.time())
    await until(lambda: counter(registry, "reachprobe_remote_write_failed_sends_total") >= 2)
    await sink.aclose(timeout=0.3)
    assert receiver.requests == []
    assert (
        counter(registry, "reachprobe_remote_write_dropped_samples_total", reason="buffer_full")
        == 0
    )
    assert sink.writer.buffer.samples > 0


async def test_4xx_is_rejected_and_counted(tmp_path: Path, receiver: Receiver, pki: Pki) -> None:
    receiver.status = 400
    config = rw_config(tmp_path, receiver.url, tls={"ca_file": str(pki.ca_file)})
    registry, _ = registry_with()
    sink = RemoteWriteSink(registry, config)
    sink.snapshot(time.time())
    await sink.aclose()
    assert len(receiver.requests) == 1
    assert counter(registry, "reachprobe_remote_write_dropped_samples_total", reason="rejected") > 0
    assert sink.writer.buffer.samples == 0


async def test_bounded_buffer_drops_oldest_and_delivers_the_rest_in_order(
    tmp_path: Path, receiver: Receiver, pki: Pki
) -> None:
    receiver.status = 503
    config = rw_config(
        tmp_path,
        receiver.url,
        tls={"ca_file": str(pki.ca_file)},
        max_buffered_samples=1000,
        max_samples_per_send=100,
    )
    registry, _ = registry_with(series=90)
    tick = Gauge("reachprobe_test_tick", "which publish", registry=registry)
    sink = RemoteWriteSink(registry, config)
    await sink.start()
    for i in range(30):
        tick.set(i)
        sink.snapshot(time.time())
        await asyncio.sleep(0.02)
    await until(lambda: len(receiver.requests) >= 2)  # 503s: retried with backoff
    assert sink.writer.buffer.samples <= 1000
    dropped = counter(
        registry, "reachprobe_remote_write_dropped_samples_total", reason="buffer_full"
    )
    assert dropped > 0
    receiver.status = 200
    await until(lambda: receiver.values("reachprobe_test_tick")[-1:] == [29.0])
    await sink.aclose()
    ticks = receiver.values("reachprobe_test_tick")
    assert ticks == [float(i) for i in range(30 - len(ticks), 30)], "oldest dropped, rest in order"
    assert len(ticks) < 30
    sent = counter(registry, "reachprobe_remote_write_sent_samples_total")
    assert sent == sum(len(p) for p in receiver.series.values())


def listening_inodes() -> set[str]:
    """Socket inodes in LISTEN state (TCP, v4 and v6) in this network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def test_push_only_agent_opens_no_port(tmp_path: Path) -> None:
    dns = {"type": "udp", "servers": ["127.0.0.1:9"]}
    config = tmp_path / "push.yaml"
    config.write_text(
        json.dumps(
            {
                "agent": {
                    "vantage": "push-only",
                    "listen": None,
                    "interval": "1s",
                    "timeout": "500ms",
                },
                "resolvers": {"test": dns, "control": dns},
                "targets": [{"name": "closed", "tcp": "127.0.0.1:9"}],
                # Shutdown waits up to the remote-write timeout to deliver what is buffered.
                "remote_write": {"url": "http://127.0.0.1:9/api/v1/write", "timeout": "1s"},
            }
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        assert agent.poll() is None, agent.communicate()[1]
        fds = Path(f"/proc/{agent.pid}/fd")
        sockets = {
            os.readlink(fd).removeprefix("socket:[").removesuffix("]")
            for fd in fds.iterdir()
            if os.readlink(fd).startswith("socket:")
        }
        assert not sockets & listening_inodes()
    finally:
        agent.terminate()
        agent.wait(timeout=10)


async def test_a_running_agent_pushes_its_cycles(
    tmp_path: Path, receiver: Receiver, pki: Pki
) -> None:
    """`reachprobe run` with remote_write and no listen address delivers its series, with the
    configured identity, to the receiver after its cycles."""
    dns = {"type": "udp", "servers": ["127.0.0.1:9"]}
    config = tmp_path / "push.yaml"
    config.write_text(
        json.dumps(
            {
                "agent": {"vantage": "ru-push", "listen": None, "interval": "1s",
                          "timeout": "300ms", "jitter": "0s"},
                "resolvers": {"test": dns},
                "targets": [{"name": "closed", "tcp": "127.0.0.1:9"}],
                "remote_write": {"url": receiver.url, "interval": "200ms",
                                 "tls": {"ca_file": str(pki.ca_file)}},
            }
        )
    )  # fmt: skip
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await until(lambda: len(receiver.values("reachprobe_last_cycle_timestamp_seconds")) >= 2)
    finally:
        agent.terminate()
        _, err = await asyncio.wait_for(agent.communicate(), 15)
    assert agent.returncode == 0, err.decode()
    info = [labels for labels in receiver.series if ("__name__", "reachprobe_agent_info") in labels]
    assert info
    assert ("vantage", "ru-push") in info[0]
    assert ("instance", "ru-push") in info[0]
    verdicts = receiver.values("reachprobe_target_up")
    assert verdicts
    assert set(verdicts) == {0.0}  # the closed port is not reachable


async def test_a_backward_wall_clock_is_counted_and_logged_not_sent_as_rejects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, _ = registry_with()
    sink = RemoteWriteSink(registry, rw_config(tmp_path, "http://127.0.0.1:9/api/v1/write"))
    with caplog.at_level(logging.INFO, "reachprobe"):
        for stamp in (1000.0, 990.0, 995.0, 1001.0):  # the clock went back 10 s, then caught up
            sink.snapshot(stamp)
    assert [s.timestamp_ms for s in sink.writer.buffer.take(10**6)] == [1_000_000, 1_001_000]
    dropped = counter(
        registry, "reachprobe_remote_write_dropped_samples_total", reason="clock_backwards"
    )
    assert sink.last_snapshot is not None
    assert dropped == 2 * len(sink.last_snapshot)  # the two snapshots stamped in the past
    said = [r.getMessage() for r in caplog.records]
    assert sum("wall clock went back 10.0s" in m for m in said) == 1  # once, not per cycle
    assert sum("past the last stamp again" in m for m in said) == 1
    await sink.aclose(timeout=0)


async def test_the_snapshot_follows_every_sink_whatever_the_order_stamped_at_measurement(
    tmp_path: Path,
) -> None:
    """Remote-write listed before the Prometheus sink still sends the cycle that sink just
    recorded, stamped with the cycle's end (not the moment of the snapshot)."""
    registry = CollectorRegistry(auto_describe=True)
    metrics = PrometheusSink(registry)
    pusher = RemoteWriteSink(registry, rw_config(tmp_path, "http://127.0.0.1:9/api/v1/write"))
    cycle = CycleReport(number=1, started_at=1_700_000_000.0, duration_seconds=2.5, reports=())
    for sink in (pusher, metrics):  # as the scheduler does: every sink, in one pass
        sink.publish(cycle)
    await asyncio.sleep(0)
    snapshot = pusher.last_snapshot
    assert snapshot is not None
    assert snapshot.timestamp_ms == 1_700_000_002_500
    values = dict(zip(snapshot.series, snapshot.values, strict=True))
    last = next(v for k, v in values.items() if ("__name__", LAST_CYCLE) in k)
    assert last == 1_700_000_002.5
    await pusher.aclose(timeout=0)


def test_the_queue_is_on_disk_in_the_state_directory_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:9/api/v1/write"
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert rw_config(tmp_path, url).queue.directory() is None  # memory only
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    assert rw_config(tmp_path, url).queue.directory() == tmp_path / "state" / "remote-write"
    assert rw_config(tmp_path, url, queue={"disk": False}).queue.directory() is None
    queue = rw_config(tmp_path, url, queue={"path": "q", "max_bytes": "1MiB", "max_age": "2h"})
    assert queue.queue.directory() == tmp_path / "q"  # relative to the config file
    assert (queue.queue.max_bytes, queue.queue.max_age) == (1 << 20, 7200.0)
    with pytest.raises(ConfigError, match=r"remote_write\.queue\.max_bytes"):
        rw_config(tmp_path, url, queue={"max_bytes": "1KiB"})


async def test_a_queue_directory_that_cannot_be_made_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    config = rw_config(tmp_path, "http://127.0.0.1:9/api/v1/write", queue={"path": "file/q"})
    registry, _ = registry_with()
    with caplog.at_level(logging.ERROR, "reachprobe"):
        sink = RemoteWriteSink(registry, config)
    assert not sink.disk
    assert "memory only" in caplog.text
    await sink.aclose(timeout=0)
