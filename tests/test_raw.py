"""The raw probes without the namespace lab: their pure parts, and real probes on loopback.

The loopback probes need CAP_NET_RAW (root); without it they skip, and the skipped result is
checked instead. Censor localization and injected packets need a path with routers: that is
tests/lab/test_raw_path.py.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from measure.followups.raw import TRACE_BY_VERDICT, trace_method
from measure.verdict import Verdict
from probes.raw import (
    Hop,
    PacketEvidence,
    RateLimits,
    RawOptions,
    RawProber,
    fingerprint_dns,
    fingerprint_reset,
    has_cap_net_raw,
    packets,
    reset_trigger,
    wants_reset_fingerprint,
)
from probes.raw import trace as trace_module
from probes.raw.capture import attach_source_filter
from probes.raw.echo import echo
from probes.raw.fingerprint import compare
from probes.raw.ratelimit import TokenBucket
from probes.raw.trace import (
    Observation,
    _confirm_silence,
    _stream_verdict,
    _syn_verdict,
    _tally,
    trace,
)
from probes.taxonomy import Code
from simlab.loopback import FORGED_ADDRESS, HOST, LoopbackLab

ROOT = Path(__file__).resolve().parent.parent
needs_raw = pytest.mark.skipif(not has_cap_net_raw(), reason="needs CAP_NET_RAW (root)")
FAST = RateLimits(global_rate=500, target_rate=500)


def test_only_probes_raw_imports_scapy() -> None:
    for package in ("agent", "probes", "simlab", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "probes" / "raw"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                assert not any(n.split(".")[0] == "scapy" for n in names), path


def test_initial_ttl_and_hops() -> None:
    assert (PacketEvidence(60, 0).initial_ttl, PacketEvidence(60, 0).hops) == (64, 4)
    assert (PacketEvidence(64, 0).initial_ttl, PacketEvidence(64, 0).hops) == (64, 0)
    assert (PacketEvidence(117, 0).initial_ttl, PacketEvidence(117, 0).hops) == (128, 11)
    assert (PacketEvidence(250, 0).initial_ttl, PacketEvidence(250, 0).hops) == (255, 5)


def test_compare_calls_another_hop_distance_injected() -> None:
    synack = PacketEvidence(60, 0, 64240, "SA")
    verdict, facts = compare(synack, PacketEvidence(63, 0, 0, "R"))
    assert verdict == "injected"
    assert "TTL 63 (1 hops" in facts
    assert "60 (4 hops" in facts
    assert "window 0 vs 64240" in facts
    assert compare(synack, PacketEvidence(60, 0, 0, "RA"))[0] == "genuine"
    # Same distance from another initial TTL (a Windows-like stack vs Linux): not the server.
    assert compare(PacketEvidence(60, 0), PacketEvidence(124, 0))[0] == "injected"


def test_token_bucket_spends_the_burst_then_spaces_requests() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    delays = [bucket.reserve() for _ in range(4)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2] == pytest.approx(0.1, abs=0.01)
    assert delays[3] == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)


async def test_rate_limits_hold_a_target_to_its_rate() -> None:
    limits = RateLimits(global_rate=1000, target_rate=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(25):
        await limits.acquire("198.18.0.1")
    # 20 at once (the burst), then 5 more at 20/s: at least 0.25s. Measured, not a speed claim.
    assert loop.time() - started >= 0.2


def test_triggers_carry_the_name() -> None:
    hello = packets.client_hello("blocked.example")
    assert hello[0] == 0x16
    assert b"blocked.example" in hello
    request = packets.http_request("blocked.example")
    assert request.startswith(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n")
    assert b"reachprobe" not in request.lower()


def _hops(*responses: tuple[str, str | None]) -> tuple[Hop, ...]:
    return tuple(Hop(i, addr, resp, 3, 3) for i, (resp, addr) in enumerate(responses, start=1))


def test_syn_verdicts() -> None:
    te = "time_exceeded"
    reached = _hops((te, "10.0.0.1"), ("timeout", None), (te, "10.0.2.1"), ("synack", "x"))
    assert _syn_verdict("x", 443, reached).blocking_hop is None  # a silent router is no censor
    dropped = _hops((te, "10.0.0.1"), (te, "10.0.1.1"), *[("timeout", None)] * 3)
    assert _syn_verdict("x", 443, dropped).blocking_hop == 3
    reset = _hops((te, "10.0.0.1"), ("rst", "x"))
    assert _syn_verdict("x", 443, reset).blocking_hop == 2
    assert _syn_verdict("x", 443, _hops(*[("timeout", None)] * 3)).blocking_hop is None


def test_stream_verdict_is_the_first_difference_from_the_control() -> None:
    te = "time_exceeded"
    control = _hops((te, "r1"), (te, "r2"), (te, "r3"), ("data", "x"))
    test = _hops((te, "r1"), ("rst", "x"), ("rst", "x"), ("rst", "x"))
    found = _stream_verdict("tls", "x", 443, test, control)
    assert (found.blocking_hop, found.router) == (2, "r2")
    dropped = _hops((te, "r1"), (te, "r2"), ("timeout", None), ("timeout", None))
    assert _stream_verdict("http", "x", 80, dropped, control).blocking_hop == 3
    assert _stream_verdict("tls", "x", 443, control, control).blocking_hop is None
    json = found.to_json()
    assert set(json) >= {"blocking_hop", "method", "hops"}
    assert json["hops"][1] == {
        "ttl": 2,
        "address": "x",
        "response": "rst",
        "agreeing": 3,
        "probes": 3,
    }


def test_an_answer_outvotes_silence() -> None:
    """A rate-limited router drops some of its ICMP errors; nothing makes one up."""
    observed = [Observation("timeout", None)] * 2 + [Observation("time_exceeded", "r1")]
    assert _tally(1, observed) == Hop(1, "r1", "time_exceeded", 1, 3)
    assert _tally(2, [Observation("timeout", None)] * 3) == Hop(2, None, "timeout", 3, 3)


def test_a_silence_the_trigger_got_past_is_no_divergence() -> None:
    te = "time_exceeded"
    control = _hops((te, "r1"), (te, "r2"), (te, "r3"), ("data", "x"))
    # Router 2 kept its error to itself, yet the trigger got time-exceeded from router 3.
    quiet = _hops((te, "r1"), ("timeout", None), (te, "r3"), ("data", "x"))
    assert _stream_verdict("tls", "x", 443, quiet, control).blocking_hop is None
    # Reaching the destination as the control did clears an earlier silence too.
    late = _hops((te, "r1"), ("timeout", None), ("timeout", None), ("data", "x"))
    assert _stream_verdict("tls", "x", 443, late, control).blocking_hop is None
    # An answer where the control got time-exceeded is a divergence, silence or not before it.
    injected = _hops((te, "r1"), ("timeout", None), ("data", "x"), ("data", "x"))
    assert _stream_verdict("http", "x", 80, injected, control).blocking_hop == 3


def scripted(script: dict[int, list[str]], address: str = "r") -> trace_module.Probe:
    """A probe answering TTL t with the next response of script[t] (its last one repeated)."""
    asked: dict[int, int] = {}

    async def probe(ttl: int) -> Observation:
        responses = script[ttl]
        index = min(asked.get(ttl, 0), len(responses) - 1)
        asked[ttl] = asked.get(ttl, 0) + 1
        response = responses[index]
        return Observation(response, None if response == "timeout" else f"{address}{ttl}")

    return probe


async def test_a_deciding_silence_is_asked_again_before_it_is_believed(monkeypatch) -> None:
    monkeypatch.setattr(trace_module, "REPROBE_PAUSE", 0.0)
    te, silent = "time_exceeded", "timeout"
    control = list(_hops((te, "r1"), (te, "r2"), (te, "r3"), ("data", "x")))
    control_probe = scripted({1: [te], 2: [te], 3: [te], 4: ["data"]})
    # Router 2 was rate-limiting when first asked; the censor at hop 3 drops the trigger.
    test = list(_hops((te, "r1"), (silent, None), (silent, None), (silent, None)))
    probe = scripted({1: [te], 2: [silent] * 3 + [te], 3: [silent], 4: [silent]})
    undecided = await _confirm_silence(test, control, probe, control_probe, 3, float("inf"))
    assert undecided is None
    assert test[1].response == te
    found = _stream_verdict("tls", "x", 443, tuple(test), tuple(control))
    assert (found.blocking_hop, found.router) == (3, "r3")


async def test_a_silence_the_control_shares_when_asked_again_decides_nothing(monkeypatch) -> None:
    monkeypatch.setattr(trace_module, "REPROBE_PAUSE", 0.0)
    te, silent = "time_exceeded", "timeout"
    control = list(_hops((te, "r1"), (te, "r2"), ("data", "x")))
    control_probe = scripted({1: [te], 2: [silent], 3: ["data"]})
    test = list(_hops((te, "r1"), (silent, None), (silent, None)))
    probe = scripted({1: [te], 2: [silent], 3: [silent]})
    assert await _confirm_silence(test, control, probe, control_probe, 3, float("inf")) == 2


async def test_bad_input_is_an_error_result_not_an_exception() -> None:
    assert (await trace("::1", 443, "syn")).status == "error"
    bad_method = await trace("127.0.0.1", 443, "ftp")  # type: ignore[arg-type]
    assert bad_method.status == "error"
    assert "ftp" in bad_method.detail
    assert (await trace("127.0.0.1", 443, "tls")).detail == "a tls trace needs the target's SNI"
    assert (await trace("127.0.0.1", 0, "syn")).status == "error"
    assert (await fingerprint_reset("not an address", 443)).status == "error"
    assert (await fingerprint_dns("127.0.0.1", "a..b", reference_name="x")).status == "error"
    assert (await echo("127.0.0.1", count=0)).status == "error"


def test_cli_rejects_bad_rates() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "probes.raw", "--rate", "0", "echo", "127.0.0.1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "--rate" in proc.stderr


# --- real probes on loopback (root) ------------------------------------------------------


@needs_raw
async def test_echo_on_loopback() -> None:
    result = await echo(HOST, count=2, limits=FAST)
    assert (result.status, result.sent, result.received) == ("ok", 2, 2)
    assert result.reply is not None
    assert result.reply.ttl == 64


@needs_raw
async def test_syn_trace_to_loopback_reaches_it_at_ttl_1(lab: LoopbackLab) -> None:
    result = await trace(HOST, lab.port("https"), "syn", max_ttl=3, timeout=1, limits=FAST)
    assert result.status == "ok"
    assert result.blocking_hop is None
    assert [(h.ttl, h.response, h.agreeing) for h in result.hops] == [(1, "synack", 3)]


@needs_raw
async def test_tls_trace_on_loopback_compares_with_the_control(lab: LoopbackLab) -> None:
    port = lab.port("https")
    result = await trace(HOST, port, "tls", sni="valid.test", timeout=1, limits=FAST)
    assert (result.status, result.blocking_hop) == ("ok", None), result
    assert [h.response for h in result.hops] == [h.response for h in result.control_hops]
    assert result.hops[-1].response == "data"
    closed = await trace(HOST, lab.closed_port, "tls", sni="valid.test", timeout=1, limits=FAST)
    assert closed.status == "error"
    assert "handshake failed" in closed.detail


@needs_raw
async def test_server_reset_and_closed_port_are_genuine(lab: LoopbackLab) -> None:
    # The raw `reset` server resets the connection after the trigger, from the server itself.
    after_trigger = await fingerprint_reset(
        HOST, lab.port("reset"), trigger=packets.client_hello("valid.test"), limits=FAST
    )
    assert after_trigger.verdict == "genuine", after_trigger
    assert after_trigger.reference is not None
    assert after_trigger.reference.flags == "SA"
    closed = await fingerprint_reset(
        HOST, lab.closed_port, reference_ports=[lab.port("https")], limits=FAST
    )
    assert closed.verdict == "genuine", closed
    assert closed.resets
    assert all("R" in (r.flags or "") for r in closed.resets)
    refused_before_trigger = await fingerprint_reset(
        HOST,
        lab.closed_port,
        trigger=packets.client_hello("valid.test"),
        reference_ports=[lab.port("https")],
        limits=FAST,
    )
    assert refused_before_trigger.verdict == "genuine", refused_before_trigger
    no_reference = await fingerprint_reset(
        HOST, lab.closed_port, reference_ports=[lab.closed_port], limits=FAST
    )
    assert no_reference.verdict == "unknown"
    assert "no SYN-ACK" in no_reference.detail


@needs_raw
async def test_dns_injection_from_the_resolver_itself_is_not_told_apart(lab: LoopbackLab) -> None:
    # simlab's `inject` sends the forged and the genuine answer from one process: same TTL,
    # so the fingerprint sees two answers and, honestly, no sign of a second sender.
    result = await fingerprint_dns(
        HOST, "inject.test", reference_name="valid.test", port=lab.dns.port, window=0.3, limits=FAST
    )
    assert result.status == "ok", result
    assert {a.addresses for a in result.answers} == {(HOST,), (FORGED_ADDRESS,)}
    assert result.verdict == "genuine"


def test_raw_config_is_off_by_default_and_checked() -> None:
    assert parse_config({}, "test").raw.enabled is False
    raw = parse_config({"raw": {"enabled": True, "max_ttl": 8, "timeout": "1500ms"}}, "t").raw
    assert (raw.enabled, raw.max_ttl, raw.timeout, raw.icmp_echo) == (True, 8, 1.5, False)
    with pytest.raises(ConfigError) as info:
        parse_config({"raw": {"rate_per_second": 0, "max_ttl": 99, "ttl": 3}}, "t")
    assert {path for path, _ in info.value.problems} == {
        "raw.rate_per_second",
        "raw.max_ttl",
        "raw.ttl",
    }


def test_follow_ups_chosen_from_verdict_and_result() -> None:
    assert trace_method(Verdict.TCP_IP_BLOCKING, "https") == "syn"
    assert trace_method(Verdict.TLS_BLOCKING, "https") == "tls"
    assert trace_method(Verdict.HTTP_BLOCKING, "http") == "http"
    untraced = set(Verdict) - {Verdict.TCP_IP_BLOCKING, Verdict.TLS_BLOCKING, Verdict.HTTP_BLOCKING}
    for verdict in untraced:
        assert trace_method(verdict, "https") is None
    assert trace_method(Verdict.REACHABLE, "https", forced=True) == "tls"
    assert trace_method(Verdict.REACHABLE, "tcp", forced=True) == "syn"
    assert trace_method(Verdict.DNS_BLOCKING, "http", forced=True) == "http"
    resets = [Code.TCP_RESET, Code.TCP_REFUSED, Code.TLS_RESET, Code.HTTP_RESET]
    others = [Code.TLS_EOF, Code.OK]
    assert [r for r in [*resets, *others] if wants_reset_fingerprint(r)] == resets
    assert b"a.example" in (reset_trigger(Code.TLS_RESET, sni="a.example", host=None) or b"")
    request = reset_trigger(Code.HTTP_RESET, sni=None, host="a.example") or b""
    assert request.startswith(b"GET ")
    assert reset_trigger(Code.TCP_REFUSED, sni="a.example", host="a.example") is None


def test_every_verdict_has_a_trace_row() -> None:
    """Adding a verdict without deciding its trace fails here (issue 24: every table once)."""
    assert set(TRACE_BY_VERDICT) == set(Verdict)


def test_raw_options_mirror_the_config_section() -> None:
    section = parse_config({}, "t").raw
    options = RawOptions(**section.model_dump(include=set(RawOptions.__dataclass_fields__)))
    assert options == RawOptions()


@needs_raw
async def test_raw_prober_fingerprints_a_server_reset(lab: LoopbackLab) -> None:
    prober = RawProber(RawOptions(rate_per_second=100, global_rate_per_second=100, timeout=1))
    result = await prober.reset(
        HOST, lab.port("reset"), Code.TLS_RESET, sni="valid.test", host=None
    )
    assert result.verdict == "genuine", result
    assert (await prober.echo(HOST)).received == 3


@needs_raw
def test_kernel_filter_keeps_only_the_probed_sources(lab: LoopbackLab) -> None:
    # An address no other test on this host uses: the raw socket sees the whole host's TCP.
    probed = "127.83.41.7"

    def tcp_sources(bind: str) -> set[str]:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
            attach_source_filter(raw, [socket.inet_aton(probed)])
            raw.setblocking(False)
            with socket.socket() as client:
                client.bind((bind, 0))
                client.connect((HOST, lab.port("http")))
            seen = set()
            with contextlib.suppress(BlockingIOError):
                while True:
                    seen.add(socket.inet_ntoa(raw.recv(65535)[12:16]))
            return seen

    assert tcp_sources(HOST) <= {probed}
    assert tcp_sources(probed) == {probed}


UNPRIVILEGED_SCRIPT = """
import asyncio, json
from probes.raw import RawOptions, RawProber, has_cap_net_raw

async def main():
    prober = RawProber(RawOptions())
    results = [
        await prober.trace("127.0.0.1", 9, "syn"),
        await prober.reset("127.0.0.1", 9, "tcp_refused", sni=None, host=None),
        await prober.dns("127.0.0.1", "a.example"),
        await prober.echo("127.0.0.1"),
    ]
    print(json.dumps([(r.status, r.detail) for r in results]))

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_without_cap_net_raw_everything_is_skipped_with_one_log_line() -> None:
    nobody = pwd.getpwnam("nobody")
    proc = subprocess.run(
        ["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
         "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
         sys.executable, "-c", UNPRIVILEGED_SCRIPT],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [["skipped", "skipped: no CAP_NET_RAW"]] * 4
    assert proc.stderr.count("raw probes skipped: no CAP_NET_RAW") == 1, proc.stderr


@needs_raw
async def test_a_trace_stops_at_its_budget(lab: LoopbackLab) -> None:
    result = await trace(HOST, lab.port("https"), "syn", budget=1e-9, limits=FAST)
    assert (result.status, result.hops) == ("error", ())
    assert "time budget" in result.detail
    assert (await trace(HOST, 443, "syn", budget=0)).detail.startswith("budget 0")


async def test_a_silence_both_sides_shared_before_the_difference_is_asked_again(
    monkeypatch,
) -> None:
    """The control was rate-limited at the censor's own TTL: asked again it answers there, so
    the hop is that TTL, not the next one where the control first answered."""
    monkeypatch.setattr(trace_module, "REPROBE_PAUSE", 0.0)
    te, silent = "time_exceeded", "timeout"
    control = list(_hops((te, "r1"), (silent, None), (te, "r3"), ("data", "x")))
    control_probe = scripted({1: [te], 2: [te], 3: [te], 4: ["data"]})
    test = list(_hops((te, "r1"), (silent, None), (silent, None), (silent, None)))
    probe = scripted({1: [te], 2: [silent], 3: [silent], 4: [silent]})
    assert await _confirm_silence(test, control, probe, control_probe, 3, float("inf")) is None
    found = _stream_verdict("tls", "x", 443, tuple(test), tuple(control))
    assert (found.blocking_hop, found.router) == (2, "r2")
