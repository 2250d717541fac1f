"""Faults, black-box: `reachprobe run` / `check` subprocesses against loopback simlab servers that
die, come back, blackhole or misbehave. Each test asserts that probing goes on and that no
result is lost; a behaviour the agent lacks today is a strict xfail naming what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simlab import (
    Blackhole,
    DnsServer,
    DohServer,
    HttpServer,
    Pki,
    Zone,
    closed_port,
    server_context,
    start_raw,
    start_web,
)
from tests.agent_process import (
    RunningAgent,
    Samples,
    check_json,
    fd_count,
    results,
    start_agent,
    until,
    write_yaml,
)

HOST = "127.0.0.1"


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def cycles(samples: Samples) -> float:
    return value(samples, "reachprobe_cycle_duration_seconds_count") or 0


def agent_config(
    path: Path,
    targets: list[dict[str, Any]],
    resolvers: dict[str, Any],
    ca_file: Path | None = None,
    **agent: Any,
) -> tuple[Path, tuple[str, int]]:
    """Write an agent config probing `targets` on loopback; returns it and the listen address."""
    port = closed_port()
    data = {
        "agent": {"vantage": "faults", "listen": f"{HOST}:{port}", "interval": "1s",
                  "timeout": "1s", "jitter": "0s", **agent},
        "resolvers": {"bogon_exempt": ["127.0.0.0/8"], "injection_window": "50ms", **resolvers},
        "targets": targets,
        "tls": {"ca_file": str(ca_file)} if ca_file else {},
    }  # fmt: skip
    return write_yaml(path, data), (HOST, port)


# --- resolvers that die and come back --------------------------------------------------------


@dataclass
class ResolverRig:
    pki: Pki
    web: HttpServer
    zone: Zone
    dns: DnsServer
    doh: DohServer


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ResolverRig]:
    pki = Pki(tmp_path / "pki")
    ctx = server_context(pki.issue("site.test", HOST))
    web = await start_web("valid", ssl_context=ctx)
    assert isinstance(web, HttpServer)
    zone = Zone({"site.test": [HOST]})
    rig = ResolverRig(
        pki, web, zone, await DnsServer(zone).start(), await DohServer(zone, ctx).start()
    )
    yield rig
    for server in (rig.web, rig.dns, rig.doh):
        await server.close()


async def start_rig_agent(rig: ResolverRig, tmp_path: Path) -> RunningAgent:
    config, listen = agent_config(
        tmp_path / "agent.yaml",
        [{"name": "site", "url": f"https://site.test:{rig.web.port}/"}],
        {"test": {"type": "udp", "servers": [f"{HOST}:{rig.dns.port}"]},
         "control": {"type": "doh", "url": rig.doh.url}},
        ca_file=rig.pki.ca_file,
    )  # fmt: skip
    return await start_agent(config, listen)


async def wait_for(agent: RunningAgent, what: str, holds: Callable[[Samples], bool]) -> Samples:
    async def check() -> Samples | None:
        s = await agent.samples()
        return s if holds(s) else None

    return await until(check, what, agent=agent)


def site_up(up: int) -> Callable[[Samples], bool]:
    return lambda s: value(s, "reachprobe_target_up", target="site") == up


async def test_the_test_resolver_dies_mid_run_and_comes_back(
    rig: ResolverRig, tmp_path: Path
) -> None:
    agent = await start_rig_agent(rig, tmp_path)
    try:
        up = await wait_for(
            agent, "site up", lambda s: value(s, "reachprobe_target_up", target="site") == 1
        )
        port = rig.dns.port
        await rig.dns.close()
        down = await wait_for(agent, "site down with the resolver dead", site_up(0))
        dns_failures = total(down, "reachprobe_probe_results_total", target="site", step="dns")
        assert dns_failures > total(up, "reachprobe_probe_results_total", target="site", step="dns")
        assert value(down, "reachprobe_target_verdict", target="site", verdict="dns_blocking") == 1
        during = cycles(down)
        rig.dns = await DnsServer(rig.zone, HOST, port).start()
        back = await wait_for(agent, "site up again", site_up(1))
        # Probing never stopped: cycles went on through the outage and after it.
        assert cycles(up) < during < cycles(back)
        assert agent.proc.returncode is None
    finally:
        await agent.kill()


async def test_the_control_resolver_dies_mid_run_and_comes_back(
    rig: ResolverRig, tmp_path: Path
) -> None:
    agent = await start_rig_agent(rig, tmp_path)

    def control(s: Samples) -> float:
        return value(s, "reachprobe_target_addresses", target="site", resolver="control") or 0

    try:
        up = await wait_for(agent, "control answers", lambda s: control(s) == 1)
        port = rig.doh.port
        await rig.doh.close()
        down = await wait_for(agent, "control silent", lambda s: control(s) == 0)
        # The test path is what the verdict is about: it is still reachable.
        assert value(down, "reachprobe_target_up", target="site") == 1
        rig.doh = await DohServer(rig.zone, server_context(rig.pki.issue(HOST)), HOST, port).start()
        back = await wait_for(agent, "control answers again", lambda s: control(s) == 1)
        assert cycles(up) < cycles(down) < cycles(back)
    finally:
        await agent.kill()


# --- every target blackholed, with few file descriptors -------------------------------------

BLACKHOLED_TARGETS = 1500
CONCURRENCY = 100
NOFILE = 256


def lower_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@dataclass
class BlackholeRun:
    samples: Samples
    max_fds: int
    log: str


@pytest.fixture(scope="module")
def blackhole_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlackholeRun]:
    """One agent probing 1500 blackholed targets under RLIMIT_NOFILE 256 for two cycles."""
    hole = Blackhole(HOST)
    tmp = tmp_path_factory.mktemp("blackhole")
    targets = [{"name": f"bh-{i}", "tcp": f"{HOST}:{hole.port}"} for i in range(BLACKHOLED_TARGETS)]
    config, listen = agent_config(
        tmp / "agent.yaml", targets, {"test": {"type": "udp", "servers": [f"{HOST}:53"]}},
        interval="2s", timeout="500ms", concurrency=CONCURRENCY,
    )  # fmt: skip

    async def run() -> BlackholeRun:
        agent = await start_agent(config, listen, preexec_fn=lower_nofile, extra=())
        max_fds = 0

        async def sample_fds() -> None:
            nonlocal max_fds
            while True:
                with contextlib.suppress(FileNotFoundError):
                    max_fds = max(max_fds, fd_count(agent.proc.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_fds())
        try:
            samples = await agent.wait_cycles(2, deadline=90)
        finally:
            sampler.cancel()
            await agent.kill()
        return BlackholeRun(samples, max_fds, agent.log)

    try:
        yield asyncio.run(run())
    finally:
        hole.close()


def test_blackholed_cycles_finish_within_the_fd_bound(blackhole_run: BlackholeRun) -> None:
    s = blackhole_run.samples
    done = cycles(s)
    assert done >= 2
    # Nothing lost: every target of every finished cycle has its TCP result, all timeouts.
    tcp = total(s, "reachprobe_probe_results_total", step="tcp")
    timeouts = total(s, "reachprobe_probe_results_total", step="tcp", result="tcp_timeout")
    assert tcp >= done * BLACKHOLED_TARGETS
    assert timeouts == tcp, "some connects failed otherwise (EMFILE?)"
    # Sockets are bounded by `concurrency`, far below both the targets and the fd limit.
    assert blackhole_run.max_fds <= CONCURRENCY + 60, blackhole_run.max_fds
    assert "Too many open files" not in blackhole_run.log


def test_a_cycle_longer_than_the_interval_is_counted(blackhole_run: BlackholeRun) -> None:
    s = blackhole_run.samples
    # 1500 targets x 0.5s / 100 at once = 7.5s per cycle, against a 2s interval.
    assert total(s, "reachprobe_cycles_late_total") >= 1


# --- servers that misbehave ------------------------------------------------------------------


async def test_misbehaving_servers_get_their_codes_and_the_check_ends(tmp_path: Path) -> None:
    servers = {
        "trickle": await start_web("trickle"),
        "loop": await start_web("redirect", location="/loop"),
        "stall": await start_raw("hello-stall"),
    }
    zone = Zone({f"{name}.test": [HOST] for name in servers})
    dns = await DnsServer(zone).start()
    targets = [
        {"name": "trickle", "url": f"http://trickle.test:{servers['trickle'].port}/"},
        {"name": "loop", "url": f"http://loop.test:{servers['loop'].port}/"},
        {"name": "stall", "url": f"https://stall.test:{servers['stall'].port}/"},
    ]
    resolvers = {"test": {"type": "udp", "servers": [f"{HOST}:{dns.port}"]}}
    config, _ = agent_config(tmp_path / "agent.yaml", targets, resolvers, listen=None)
    try:
        code, report, _ = await check_json(config, timeout=30)
    finally:
        for server in (*servers.values(), dns):
            await server.close()
    assert code == 1
    by_name = results(report)

    def step(name: str, kind: str) -> dict[str, Any]:
        return next(s for s in by_name[name]["steps"] if s["step"] == kind)

    # One byte every 0.2 s is still arriving at the deadline: slow, not stalled (issue 22).
    assert step("trickle", "http")["result"] == "http_slow"
    assert "still arriving at" in step("trickle", "http")["detail"]
    assert step("loop", "http")["result"] == "http_error"
    assert "redirects" in step("loop", "http")["detail"]
    assert step("stall", "tls")["result"] == "tls_timeout"


# --- signals ---------------------------------------------------------------------------------


async def test_sigterm_with_probes_in_flight_exits_0_promptly(tmp_path: Path) -> None:
    hole = Blackhole(HOST)
    targets = [{"name": f"bh-{i}", "tcp": f"{HOST}:{hole.port}"} for i in range(20)]
    config, listen = agent_config(
        tmp_path / "agent.yaml", targets, {"test": {"type": "udp", "servers": [f"{HOST}:53"]}},
        interval="30s", timeout="20s",
    )  # fmt: skip
    try:
        agent = await start_agent(config, listen)
        await asyncio.sleep(1)  # the first cycle's connects are now hanging in the blackhole
        assert agent.proc.returncode is None
        code, took = await agent.stop(timeout=10)
    finally:
        hole.close()
    assert code == 0
    # Well within the 20s probe timeout: in-flight probes were cancelled, not waited for.
    assert took < 10
    assert "stopped" in agent.log


@pytest.fixture
async def site_agent(rig: ResolverRig, tmp_path: Path) -> AsyncIterator[RunningAgent]:
    agent = await start_rig_agent(rig, tmp_path)
    yield agent
    await agent.kill()


async def test_sighup_with_a_good_config_keeps_the_counters(
    site_agent: RunningAgent, tmp_path: Path
) -> None:
    before = await site_agent.wait_cycles(2)
    runs = total(before, "reachprobe_probe_results_total", target="site")
    path = tmp_path / "agent.yaml"
    path.write_text(path.read_text().replace("timeout: 1s", "timeout: 900ms"))
    site_agent.proc.send_signal(signal.SIGHUP)
    after = await wait_for(
        site_agent, "a reload and a cycle after it",
        lambda s: (value(s, "reachprobe_config_reloads_total", outcome="success") or 0) >= 1
        and cycles(s) >= cycles(before) + 2,
    )  # fmt: skip
    assert total(after, "reachprobe_probe_results_total", target="site") > runs


async def test_sighup_with_a_broken_config_says_so_in_gauges(
    site_agent: RunningAgent, tmp_path: Path
) -> None:
    await site_agent.wait_cycles(1)
    (tmp_path / "agent.yaml").write_text("agent: {interval: nonsense}\n")
    started = time.time()
    site_agent.proc.send_signal(signal.SIGHUP)
    s = await wait_for(
        site_agent, "a failed reload",
        lambda s: (value(s, "reachprobe_config_reloads_total", outcome="failure") or 0) >= 1,
    )  # fmt: skip
    assert value(s, "reachprobe_config_last_reload_successful") == 0
    good = value(s, "reachprobe_config_last_reload_success_timestamp_seconds")
    assert good is not None
    assert good < started


# --- DNS servers that misbehave ----------------------------------------------------------------

MANY = [f"127.0.1.{i}" for i in range(1, 61)]  # 60 A records: far beyond 512 bytes


@pytest.fixture(scope="module")
def odd_dns_check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One `check` against a resolver that sends mismatched IDs, oversized and truncated
    answers."""
    tmp = tmp_path_factory.mktemp("odd-dns")

    async def run() -> dict[str, dict[str, Any]]:
        web = await start_web("valid")
        zone = Zone({
            "mismatched.test": {"kind": "mismatched", "addresses": [HOST], "forged": ["127.0.0.9"]},
            "oversized.test": {"kind": "oversized", "addresses": MANY},
            "truncated.test": MANY,
        })  # fmt: skip
        dns = await DnsServer(zone).start()
        targets = [
            {"name": name, "url": f"http://{name}.test:{web.port}/"}
            for name in ("mismatched", "oversized", "truncated")
        ]
        resolvers = {"test": {"type": "udp", "servers": [f"{HOST}:{dns.port}"]}}
        config, _ = agent_config(
            tmp / "agent.yaml", targets, resolvers, listen=None, max_addresses=4
        )
        try:
            _, report, _ = await check_json(config, timeout=60)
        finally:
            await web.close()
            await dns.close()
        return results(report)

    return asyncio.run(run())


def dns_step(report: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["step"] == "dns")


def test_a_reply_with_a_mismatched_id_is_ignored(odd_dns_check: dict[str, Any]) -> None:
    report = odd_dns_check["mismatched"]
    assert dns_step(report)["result"] == "ok"
    assert "127.0.0.9" not in dns_step(report)["detail"]
    assert report["verdict"] == "reachable"


def test_an_oversized_answer_is_read_and_its_addresses_capped(
    odd_dns_check: dict[str, Any],
) -> None:
    report = odd_dns_check["oversized"]
    assert dns_step(report)["result"] == "ok"
    probed = {s["address"] for s in report["steps"] if s["step"] == "tcp"}
    assert 1 <= len(probed) <= 8  # agent.address_limit: further addresses only after failures


def test_a_truncated_udp_answer_is_retried_over_tcp(odd_dns_check: dict[str, Any]) -> None:
    assert dns_step(odd_dns_check["truncated"])["result"] == "ok"
