"""The measurement log sink: OONI-shaped records of real demo-world cycles, rotation, the
config section, and `reachprobe run` writing it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import ConfigError, parse_config
from agent.planner import LOG_BODY_SAMPLE, make_plan
from agent.sinks.measurement_log import MeasurementLogSink
from tests.demo_world import demo_agent, publish_demo_cycle

DEADLINE = 30.0
OPERATIONS = ("tcp_connect", "tls_handshakes", "requests")


def keys(value: Any) -> set[str]:
    """Every mapping key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


async def test_one_record_per_target_in_ooni_shape(tmp_path: Path) -> None:
    log = tmp_path / "measurements.jsonl"
    section = {"path": str(log)}
    sink = MeasurementLogSink()
    _, plan, _ = await publish_demo_cycle(sink, tmp_path, measurement_log=section)
    await sink.aclose()
    records = {r["test_keys"]["target"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert list(records) == [t.name for t in plan.targets]
    news = records["news"]
    assert news["probe_cc"] == "ZZ"
    assert news["probe_asn"] == "AS0"
    assert news["annotations"]["vantage"] == "demo"
    assert news["annotations"]["role"] == "test"
    # OONI's annotations are strings (df-000); its loaders refuse an integer.
    assert news["annotations"]["cycle"] == "1"
    assert all(isinstance(v, str) for v in news["annotations"].values())
    assert news["input"].startswith("https://news.test:")
    assert news["test_keys"]["accessible"] is True
    assert news["test_keys"]["blocking"] is False
    queries = news["test_keys"]["queries"]
    assert [(q["hostname"], q["query_type"]) for q in queries] == [
        ("news.test", "A"),
        ("news.test", "AAAA"),
    ]
    # The demo's zone gives A records only, with a TTL; the AAAA query is answered empty.
    assert queries[0]["answers"] == [{"answer_type": "A", "ipv4": "127.0.0.1", "ttl": 60}]
    assert (queries[1]["answers"], queries[1]["failure"]) == ([], "dns_no_answer")
    assert all(q["resolver_address"].startswith("127.0.0.1:") for q in queries)
    # Per-operation times since the measurement's start, each after the one before.
    operations = [*queries[:1], *(news["test_keys"][k][0] for k in OPERATIONS)]
    assert operations[0]["t0"] == 0.0
    assert all(a["t"] <= b["t0"] for a, b in itertools.pairwise(operations))
    tls = news["test_keys"]["tls_handshakes"][0]
    assert tls["tls_version"].startswith("TLSv1.")
    assert tls["cipher_suite"]
    assert tls["no_tls_verify"] is False
    assert base64.b64decode(tls["peer_certificates"][0]["data"])[:1] == b"\x30"  # DER
    request = news["test_keys"]["requests"][0]
    assert request["request"]["headers"]["Host"].startswith("news.test:")
    assert "Today's news." in request["response"]["body"]
    assert request["response"]["headers"]["content-type"].startswith("text/html")
    assert news["test_keys"]["requests"][0]["response"]["code"] == 200
    messenger = records["messenger"]["test_keys"]
    assert messenger["blocking"] == "http-failure"
    assert messenger["tls_handshakes"][0]["failure"] == "connection_reset"
    assert messenger["tls_handshakes"][0]["server_name"] == "messenger.test"
    assert records["poisoned"]["test_keys"]["blocking"] == "dns"
    assert records["poisoned"]["test_keys"]["queries"][0]["failure"] == "dns_bogon_error"
    assert records["blocked-page"]["test_keys"]["blocking"] == "http-diff"
    assert records["ip-blocked"]["test_keys"]["blocking"] == "tcp_ip"
    for record in records.values():
        # OONI's base format has probe_ip; this log never records the volunteer's address,
        # only the spec's privacy value.
        assert record["probe_ip"] == "127.0.0.1"
        assert [k for k in keys(record) if k == "probe_ip"] == ["probe_ip"]
        assert record["test_keys"]["steps"]


async def test_the_log_rotates_by_size_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    section = {"path": str(log), "max_bytes": 16384, "backups": 2}
    sink = MeasurementLogSink()
    _, _, cycle = await publish_demo_cycle(sink, tmp_path, measurement_log=section)
    for _ in range(5):
        sink.publish(cycle)
    await sink.aclose()
    files = log_files(tmp_path, "m.jsonl*")
    assert [p.name for p in files] == ["m.jsonl", "m.jsonl.1", "m.jsonl.2"]
    for path in files:
        assert path.stat().st_size <= 16384
        assert all(json.loads(line) for line in _lines(path))


async def test_with_no_backups_the_log_starts_anew(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    section = {"path": str(log), "max_bytes": 16384, "backups": 0}
    sink = MeasurementLogSink()
    _, _, cycle = await publish_demo_cycle(sink, tmp_path, measurement_log=section)
    for _ in range(5):
        sink.publish(cycle)
    await sink.aclose()
    assert log_files(tmp_path, "m.jsonl*") == [log]
    assert 0 < log.stat().st_size <= 16384


async def test_no_section_no_log(tmp_path: Path) -> None:
    sink = MeasurementLogSink()
    await publish_demo_cycle(sink, tmp_path)
    await sink.aclose()
    assert log_files(tmp_path, "*.jsonl*") == []


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"path": "/nonexistent-dir/m.jsonl"}, "measurement_log.path"),
        ({"path": "m.jsonl", "max_bytes": 100}, "measurement_log.max_bytes"),
        ({"path": "m.jsonl", "colour": "red"}, "measurement_log.colour: unknown key"),
    ],
)
def test_a_bad_section_is_a_clear_error(
    tmp_path: Path, section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"measurement_log": section}, "site.yaml", tmp_path)
    assert f"site.yaml: {problem}" in str(caught.value)


def test_a_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = parse_config({"measurement_log": {"path": "m.jsonl"}}, "site.yaml", tmp_path)
    assert config.measurement_log is not None
    assert config.measurement_log.path == tmp_path / "m.jsonl"


async def test_reachprobe_run_writes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    async with demo_agent(tmp_path, measurement_log={"path": str(log)}):
        path = tmp_path / "agent.yaml"
        data = yaml.safe_load(path.read_text())
        data["agent"]["listen"] = None
        path.write_text(yaml.safe_dump(data))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--config", str(path),
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(_grown(log, len(data["targets"])), DEADLINE)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    names = [json.loads(line)["test_keys"]["target"] for line in _lines(log)]
    assert sorted(names) == sorted(t["name"] for t in data["targets"])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def log_files(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern))


async def _grown(path: Path, lines: int) -> None:
    """Return once `path` has `lines` lines (the caller bounds the wait)."""
    while len(_lines(path)) < lines:  # noqa: ASYNC110 - a file has no event to wait on
        await asyncio.sleep(0.2)


def test_page_bodies_are_kept_only_for_the_log(tmp_path: Path) -> None:
    # Every target's latest report stays in memory: the body sample costs only with a log.
    targets = [{"name": "a", "url": "https://a.example/"}]
    plain = parse_config({"targets": targets}, "site.yaml", tmp_path)
    logged = parse_config(
        {"targets": targets, "measurement_log": {"path": "m.jsonl"}}, "site.yaml", tmp_path
    )
    assert make_plan(plain).body_sample == 0
    assert make_plan(logged).body_sample == LOG_BODY_SAMPLE == 4096
