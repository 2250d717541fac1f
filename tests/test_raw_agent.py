"""The raw probes in the agent: planned from the config (scapy only when opted in), their
follow-ups' results in the JSON, and their Prometheus series (agent/sinks/prometheus/raw.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.config import parse_config
from agent.planner import make_plan
from agent.sinks.prometheus.raw import RawMetrics
from measure.followups.raw import RawFollowups
from measure.prober import Prober
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
    raw = Prober(make_plan(config)).raw
    assert isinstance(raw, RawFollowups)
    prober = raw.prober
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


def test_raw_follow_ups_attach_echo_and_dns_fingerprint(tmp_path: Path) -> None:
    """With raw probes on: a `tcp:` target's TCP step carries its ICMP echo, and an injected
    DNS answer its fingerprint (loopback: both answers come from one box, so the TTLs agree
    and the fingerprint cannot call them injected). Without CAP_NET_RAW both say skipped."""
    import asyncio
    import json

    from simlab import Zone, start_dns

    async def run_check() -> dict[str, object]:
        zone = Zone({"inj.test": {"kind": "inject", "addresses": ["127.0.0.1"],
                                  "forged": ["127.0.0.5"]}})  # fmt: skip
        dns_server = await start_dns(zone)
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        config = tmp_path / "raw.yaml"
        config.write_text(
            json.dumps(
                {
                    "agent": {"timeout": "1s", "listen": None},
                    "resolvers": {
                        "test": {"type": "udp", "servers": [f"127.0.0.1:{dns_server.port}"]},
                        "bogon_exempt": ["127.0.0.0/8"],
                        "injection_window": "200ms",
                    },
                    "raw": {"enabled": True, "icmp_echo": True, "trace": False, "timeout": "1s"},
                    "targets": [
                        {"name": "lo", "tcp": f"127.0.0.1:{port}"},
                        {"name": "inj", "host": "inj.test", "port": port},
                    ],
                }
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "check", "--config", str(config),
            "--format", "json", stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        listener.close()
        await dns_server.close()
        return json.loads(out)

    doc = asyncio.run(run_check())
    by_name = {t["name"]: t for t in doc["targets"]}  # type: ignore[index, union-attr]
    echo = by_name["lo"]["steps"][0]["data"]["icmp_echo"]
    assert echo["status"] in ("ok", "skipped")
    if echo["status"] == "ok":
        assert echo["received"] >= 1
    dns = by_name["inj"]["steps"][0]
    assert dns["result"] == "dns_injected"
    fingerprint = dns["data"]["dns_injection"]
    assert fingerprint["status"] in ("ok", "skipped")
    if fingerprint["status"] == "ok":
        assert fingerprint["verdict"] != "injected"


def test_fingerprint_evidence_is_counted_by_kind_and_verdict() -> None:
    from agent.sinks.prometheus import PrometheusSink
    from measure.followups.raw import RawEvidence
    from measure.plan import TargetPlan
    from measure.report import TargetReport
    from measure.verdict import Verdict
    from probes.results import StepResult
    from probes.taxonomy import Code, Step

    reset = StepResult(Step.TLS, Code.TLS_RESET, "192.0.2.9:443").with_evidence(
        RawEvidence("injection", "ok", {}, "injected", "the reset looks injected")
    )
    skipped = StepResult(Step.TCP, Code.OK, "192.0.2.9:443").with_evidence(
        RawEvidence("injection", "skipped", {}, "unknown")
    )
    report = TargetReport(
        TargetPlan("t", "", "tls", "192.0.2.9", 443), Verdict.TLS_BLOCKING,
        chains=((skipped, reset),),
    )  # fmt: skip
    metrics = PrometheusSink()
    metrics.observe(report)
    sample = metrics.registry.get_sample_value
    name = "reachprobe_injection_fingerprints_total"
    assert sample(name, {"target": "t", "kind": "rst", "verdict": "injected"}) == 1
    assert sample(name, {"target": "t", "kind": "rst", "verdict": "unknown"}) is None
    assert "the reset looks injected" in reset.full_detail
