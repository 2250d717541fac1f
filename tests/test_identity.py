"""Nothing the agent outputs identifies the volunteer's machine.

The agent runs (`reachprobe run`, then `reachprobe check`) against the loopback lab with a
spread of outcomes, and every output surface is searched for this machine's non-loopback
interface addresses, MAC addresses and hostname: the endpoints (metrics, health, the status
page), `check` in both formats, the run log, the measurement log and the remote-write payload
a receiver gets. A new surface is one more entry in `SURFACES`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.sinks.remote_write.wire import decode_write_request
from simlab.loopback import LoopbackLab
from tests.agent_process import RunningAgent, run_cli, start_agent, write_yaml
from tests.identity import Needle, leaks, machine_needles

# --- the surfaces ----------------------------------------------------------------------------


@dataclass
class Outputs:
    """A running agent, its config file, what each surface gave, and what a remote-write
    receiver got from it (decoded)."""

    agent: RunningAgent
    config: Path
    texts: dict[str, str] = field(default_factory=dict)
    pushed: list[str] = field(default_factory=list)


Collect = Callable[[Outputs], Awaitable[str]]


@dataclass(frozen=True)
class Surface:
    """One place the agent writes to; `after_stop` ones are read once the agent has exited."""

    name: str
    collect: Collect
    after_stop: bool = False
    may_be_empty: bool = False


def _page(path: str, accept: str = "") -> Collect:
    async def collect(out: Outputs) -> str:
        headers = {"Accept": accept} if accept else {}
        status, body = await out.agent.get(path, headers=headers)
        assert status in (200, 503), f"{path} answered {status}"
        return body

    return collect


def _check(fmt: str, stream: str) -> Collect:
    async def collect(out: Outputs) -> str:
        done = await asyncio.to_thread(run_cli, "check", out.config, "--format", fmt)
        assert done.returncode in (0, 1), done.stderr
        return str(getattr(done, stream))

    return collect


async def _run_log(out: Outputs) -> str:
    return out.agent.log


async def _measurement_log(out: Outputs) -> str:
    return (out.config.parent / "measurements.jsonl").read_text(encoding="utf-8")


async def _pushed(out: Outputs) -> str:
    return "\n".join(out.pushed)


# Every surface the agent has today. Add new ones (status page, measurement log,
# remote-write payload) here.
SURFACES = [
    Surface("/metrics (Prometheus text)", _page("/metrics")),
    Surface("/metrics (OpenMetrics)", _page("/metrics", "application/openmetrics-text")),
    Surface("/healthz", _page("/healthz")),
    Surface("/ (index page)", _page("/")),
    Surface("check --format json", _check("json", "stdout")),
    Surface("check table", _check("table", "stdout")),
    # Empty today without a terminal (no progress line, no log), searched all the same.
    Surface("check stderr", _check("json", "stderr"), may_be_empty=True),
    Surface("run log (debug level)", _run_log, after_stop=True),
    Surface("measurement log", _measurement_log, after_stop=True),
    Surface("remote-write payload", _pushed, after_stop=True),
]


def identity_targets(lab: LoopbackLab) -> list[dict[str, Any]]:
    """Targets with a spread of outcomes: reachable, blockpage, redirect, resets, DNS
    failures, a bogon, an injection, an inconsistent answer, a refused connect."""
    return [
        {"name": "valid", "url": lab.url("https", "valid.test")},
        {"name": "plain", "url": lab.url("http", "valid.test")},
        {"name": "blockpage", "url": lab.url("blockpage", "blocked.test")},
        {"name": "redirect-away", "url": lab.url("redirect-away", "valid.test")},
        {"name": "reset", "url": lab.url("reset", "valid.test", "https")},
        {"name": "untrusted", "url": lab.url("untrusted", "untrusted.test")},
        {"name": "nx", "url": lab.url("https", "nx.test")},
        {"name": "silent-dns", "url": lab.url("https", "silent.test")},
        {"name": "bogon", "url": lab.url("https", "bogon.test")},
        {"name": "inject", "url": lab.url("https", "inject.test")},
        {"name": "inconsistent", "url": lab.url("https", "inconsistent.test")},
        {"name": "refused", "tcp": f"127.0.0.1:{lab.closed_port}"},
    ]


async def _receiver(pushed: list[str]) -> tuple[web.AppRunner, str]:
    """A remote-write receiver on loopback that keeps every payload, decoded to text."""

    async def write(request: web.Request) -> web.Response:
        pushed.append(repr(decode_write_request(await request.read())))
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/write"


def _collect(lab: LoopbackLab, directory: Path, **agent: Any) -> dict[str, str]:
    config = lab.config(identity_targets(lab))
    config["agent"].update(agent)
    config["measurement_log"] = {"path": str(directory / "measurements.jsonl")}
    host, port = config["agent"]["listen"].rsplit(":", 1)

    async def run() -> dict[str, str]:
        pushed: list[str] = []
        receiver, url = await _receiver(pushed)
        config["remote_write"] = {"url": url, "interval": "200ms", "timeout": "2s"}
        path = write_yaml(directory / "agent.yaml", config)
        running = await start_agent(path, (host, int(port)))
        out = Outputs(running, path, pushed=pushed)
        try:
            await running.wait_cycles(1)
            async with asyncio.timeout(15):
                while not pushed:  # noqa: ASYNC110 - the receiver's list fills as pushes land
                    await asyncio.sleep(0.1)
            for surface in SURFACES:
                if not surface.after_stop:
                    out.texts[surface.name] = await surface.collect(out)
        finally:
            await running.stop()
            await receiver.cleanup()
        for surface in SURFACES:
            if surface.after_stop:
                out.texts[surface.name] = await surface.collect(out)
        return out.texts

    return asyncio.run(run())


@pytest.fixture(scope="module")
def outputs(session_lab: LoopbackLab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _collect(session_lab, tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def needles() -> list[Needle]:
    found = machine_needles()
    if not found:
        pytest.skip("this machine has no non-loopback address, MAC or hostname to look for")
    return found


@pytest.mark.parametrize("surface", [s.name for s in SURFACES])
def test_no_surface_identifies_the_machine(
    outputs: dict[str, str], needles: list[Needle], surface: str
) -> None:
    text = outputs[surface]
    if not next(s for s in SURFACES if s.name == surface).may_be_empty:
        assert text.strip(), f"{surface} is empty: the surface was not really collected"
    assert not leaks(text, needles), "\n".join(leaks(text, needles))


def test_the_run_covered_the_outcomes(outputs: dict[str, str]) -> None:
    # The search means something only if the agent really probed a spread of outcomes.
    metrics = outputs["/metrics (Prometheus text)"]
    for verdict in ("reachable", "dns_blocking", "tls_blocking", "http_blocking"):
        assert f'verdict="{verdict}"}} 1.0' in metrics, verdict


def test_the_search_finds_each_kind_of_needle(needles: list[Needle]) -> None:
    for needle in needles:
        spelled = needle.value.upper() if needle.kind == "MAC address" else needle.value
        if needle.kind == "IPv6 address":
            spelled = f"[{spelled}]"  # as endpoints are written
        assert leaks(f'detail="from {spelled}:443 ok"', [needle]), needle
    macs = [n for n in needles if n.kind == "MAC address"]
    for needle in macs:
        assert leaks(needle.value.replace(":", "-"), [needle])
        assert leaks(needle.value.replace(":", ""), [needle])
    # Other numbers or addresses that merely contain an address are not a match.
    for needle in needles:
        if needle.kind == "IPv4 address":
            assert not leaks(f"1{needle.value}9 {needle.value}.1", [needle])
        if needle.kind == "IPv6 address":
            assert not leaks(f"{needle.value}:1 a{needle.value}", [needle])


def test_a_configured_hostname_is_found(
    session_lab: LoopbackLab, tmp_path: Path, needles: list[Needle]
) -> None:
    """The vantage name is the volunteer's choice: named after the host, the scan finds it
    (which shows the scan sees the surfaces it claims to)."""
    hostname = [n for n in needles if n.kind == "hostname"]
    if not hostname or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", hostname[0].value):
        pytest.skip("no hostname usable as a vantage name")
    texts = _collect(session_lab, tmp_path, vantage=hostname[0].value)
    assert leaks(texts["/metrics (Prometheus text)"], hostname)
    assert leaks(texts["check --format json"], hostname)
