"""The raw probes in the agent: planned from the config (scapy only when opted in), their
follow-ups' results in the JSON, and their Prometheus series (agent/raw.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.config import parse_config
from agent.planner import make_plan
from agent.raw import RawMetrics
from measure.followups.raw import RawFollowups
from probes.raw import DnsFingerprint, Hop, ResetFingerprint, Trace

ROOT = Path(__file__).resolve().parent.parent


def test_the_agent_loads_scapy_only_when_raw_probes_are_on() -> None:
    code = (
        "import sys, agent.cli, agent.config, agent.planner, measure.prober\n"
        "off = agent.config.parse_config({}, 't')\n"
        "measure.prober.Prober(agent.planner.make_plan(off))\n"
        "print('scapy' in sys.modules)\n"
        "on = agent.config.parse_config({'raw': {'enabled': True}}, 't')\n"
        "measure.prober.Prober(agent.planner.make_plan(on))\n"
        "print('scapy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.split() == ["False", "True"]


def test_raw_prober_takes_the_configured_options() -> None:
    config = parse_config(
        {"raw": {"enabled": True, "rate_per_second": 2, "max_ttl": 9, "control_sni": "x.test"}},
        "t",
    )
    plan = make_plan(config)
    assert plan.raw is not None
    prober = RawFollowups(plan.raw).prober
    assert (prober.options.max_ttl, prober.options.control_sni) == (9, "x.test")
    assert (prober.limits.target_rate, prober.limits.global_rate) == (2, 20)


def samples(registry: CollectorRegistry) -> list[str]:
    # `_created` series exist unless the agent's Metrics switched them off, process-wide.
    text = generate_latest(registry).decode()
    return [
        line for line in text.splitlines() if line[:1] not in ("", "#") and "_created" not in line
    ]


def test_blocking_hop_is_set_and_removed() -> None:
    registry = CollectorRegistry()
    metrics = RawMetrics(registry)
    hops = (Hop(1, "10.0.0.1", "time_exceeded", 3, 3), Hop(2, "198.18.1.15", "rst", 3, 3))
    metrics.record_trace("sni-blocked", Trace("ok", "tls", "198.18.1.15", 443, 2, None, hops))
    assert samples(registry) == ['reachprobe_path_blocking_hop{target="sni-blocked"} 2.0']
    # Reachable now: the series goes (absent when unknown), and a skipped trace sets nothing.
    metrics.record_trace("sni-blocked", Trace("ok", "tls", "198.18.1.15", 443, None))
    metrics.record_trace("other", Trace("skipped", "syn", "198.18.1.16", 443, None))
    metrics.forget_trace("never-traced")
    assert samples(registry) == []


def test_fingerprints_are_counted_by_kind_and_verdict() -> None:
    registry = CollectorRegistry()
    metrics = RawMetrics(registry)
    metrics.record_fingerprint("t", "rst", ResetFingerprint("ok", "injected", "198.18.1.1", 443))
    metrics.record_fingerprint("t", "rst", ResetFingerprint("ok", "injected", "198.18.1.1", 443))
    metrics.record_fingerprint("t", "dns", DnsFingerprint("ok", "genuine", "198.18.0.53", "a"))
    metrics.record_fingerprint("t", "dns", DnsFingerprint("skipped", "unknown", "198.18.0.53", "a"))
    assert sorted(samples(registry)) == [
        'reachprobe_injection_fingerprints_total{kind="dns",target="t",verdict="genuine"} 1.0',
        'reachprobe_injection_fingerprints_total{kind="rst",target="t",verdict="injected"} 2.0',
    ]


def test_check_trace_puts_a_trace_on_each_target(tmp_path: Path) -> None:
    """`check --trace` on loopback: the path is one hop, nothing blocks it. As root the trace
    runs (`ok`); without CAP_NET_RAW it is `skipped`, and the check still works."""
    import asyncio
    import json

    async def serve() -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    async def run_check() -> tuple[int, dict[str, object]]:
        server, port = await serve()
        config = tmp_path / "trace.yaml"
        config.write_text(
            json.dumps(
                {
                    "agent": {"timeout": "1s", "listen": None},
                    "resolvers": {"test": {"type": "udp", "servers": ["127.0.0.1:9"]}},
                    "raw": {"timeout": "1s", "max_ttl": 4, "repeats": 1},
                    "targets": [{"name": "lo", "tcp": f"127.0.0.1:{port}"}],
                }
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "check", "--config", str(config),
            "--format", "json", "--trace", stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        server.close()
        return proc.returncode or 0, json.loads(out)

    code, doc = asyncio.run(run_check())
    assert code == 0
    target = doc["targets"][0]  # type: ignore[index]
    assert target["verdict"] == "reachable"
    trace = target["trace"]
    assert trace["method"] == "syn"
    assert trace["blocking_hop"] is None
