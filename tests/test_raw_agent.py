"""agent/raw.py: the raw probes' options from the config, and their Prometheus series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.config import parse_config
from agent.raw import RawMetrics, raw_prober
from probes.raw import DnsFingerprint, Hop, ResetFingerprint, Trace

ROOT = Path(__file__).resolve().parent.parent


def test_the_agent_loads_scapy_only_for_a_prober() -> None:
    code = (
        "import sys, agent.raw, agent.config\n"
        "print('scapy' in sys.modules)\n"
        "agent.raw.raw_prober(agent.config.parse_config({}, 't').raw)\n"
        "print('scapy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert out.split() == ["False", "True"]


def test_raw_prober_takes_the_configured_options() -> None:
    section = parse_config(
        {"raw": {"enabled": True, "rate_per_second": 2, "max_ttl": 9, "control_sni": "x.test"}},
        "t",
    ).raw
    prober = raw_prober(section)
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
