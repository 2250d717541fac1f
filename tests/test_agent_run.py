"""`reachprobe run` as a user runs it: a subprocess probing loopback servers, scraped over HTTP.

Covers the metrics contract, content negotiation, /healthz, SIGHUP reloads (a broken config
keeps the old one) and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from measure.verdict import Verdict
from simlab import Pki, Zone, closed_port, server_context, start_dns, start_web
from tests.agent_process import DEADLINE, until

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Agent:
    proc: asyncio.subprocess.Process
    base: str
    config_path: Path
    config: dict

    async def get(self, path: str, accept: str = "") -> tuple[int, str, str]:
        headers = {"Accept": accept} if accept else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base + path, headers=headers, timeout=aiohttp.ClientTimeout(5)) as r,
        ):
            return r.status, r.headers.get("Content-Type", ""), await r.text()

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, _, text = await self.get("/metrics")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def rewrite(self, data: dict | str) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data)
        self.config_path.write_text(text, encoding="utf-8")


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    pki = Pki(tmp_path)
    web = await start_web("valid", ssl_context=server_context(pki.issue("site.test")))
    dns_server = await start_dns(Zone({"site.test": ["127.0.0.1"], "gone.test": "nxdomain"}))
    port = closed_port()
    config = {
        "agent": {"vantage": "lo-test", "role": "control", "country": "DE", "asn": "AS64500",
                  "listen": f"127.0.0.1:{port}", "interval": "1s", "timeout": "1s",
                  "jitter": "0s"},
        "resolvers": {"test": {"type": "udp", "servers": [f"127.0.0.1:{dns_server.port}"]},
                      "bogon_exempt": ["127.0.0.0/8"], "injection_window": "50ms"},
        "tls": {"ca_file": str(pki.ca_file)},
        "targets": [
            {"name": "site", "url": f"https://site.test:{web.port}/", "group": "web"},
            {"name": "gone", "url": f"https://gone.test:{web.port}/"},
        ],
    }  # fmt: skip
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--config", str(path),
        cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Agent(proc, f"http://127.0.0.1:{port}", path, config)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await web.close()
        await dns_server.close()


async def first_cycle(agent: Agent) -> dict:
    async def done() -> bool:
        return bool(value(await agent.samples(), "reachprobe_target_up", target="gone") == 0)

    await until(done, "the first cycle")
    return await agent.samples()


async def test_metrics_contract_after_a_cycle(agent: Agent) -> None:
    s = await first_cycle(agent)
    assert value(s, "reachprobe_target_up", target="site") == 1
    assert value(s, "reachprobe_target_verdict", target="site", verdict="reachable") == 1
    assert value(s, "reachprobe_target_verdict", target="gone", verdict="dns_blocking") == 1
    verdicts = [v for (n, lbl), v in s.items() if n == "reachprobe_target_verdict"
                and dict(lbl)["target"] == "gone"]  # fmt: skip
    assert sorted(verdicts) == [0] * (len(Verdict) - 1) + [1]  # a state set: exactly one is 1
    for step_name in ("dns", "tcp", "tls", "http"):
        assert value(s, "reachprobe_probe_success", target="site", step=step_name) == 1
        assert value(s, "reachprobe_probe_last_duration_seconds", target="site", step=step_name) > 0
        assert value(s, "reachprobe_probe_duration_seconds_count", step=step_name) >= 1
    assert value(s, "reachprobe_probe_success", target="gone", step="dns") == 0
    assert value(s, "reachprobe_probe_results_total", target="gone", step="dns",
                 result="dns_nxdomain") >= 1  # fmt: skip
    # Steps that never ran are not counted as runs.
    assert not any(n == "reachprobe_probe_results_total" and dict(lbl)["result"] == "skipped"
                   for n, lbl in s)  # fmt: skip
    assert value(s, "reachprobe_target_addresses", target="site", resolver="test") == 1
    port = str(agent.config["targets"][0]["url"].rsplit(":", 1)[1].strip("/"))
    assert value(s, "reachprobe_target_info", target="site", host="site.test", port=port,
                 scheme="https", group="web") == 1  # fmt: skip
    assert value(s, "reachprobe_agent_info", vantage="lo-test", role="control", country="DE",
                 asn="AS64500", version=_version(s)) == 1  # fmt: skip
    assert value(s, "reachprobe_cycle_duration_seconds_count") >= 1
    assert value(s, "reachprobe_last_cycle_timestamp_seconds") > 1.7e9
    assert value(s, "reachprobe_http_throughput_bytes_per_second", target="site") > 0


def _version(samples: dict) -> str:
    [labels] = [dict(lbl) for n, lbl in samples if n == "reachprobe_agent_info"]
    return labels["version"]


async def test_no_address_or_url_appears_in_label_values(agent: Agent) -> None:
    s = await first_cycle(agent)
    for name, labels in s:
        for key, val in labels:
            if name == "reachprobe_target_info" and key == "host":
                continue  # the configured host name, by design
            assert "127.0.0.1" not in val, (name, key, val)
            assert "://" not in val, (name, key, val)


async def test_openmetrics_by_content_negotiation_and_healthz(agent: Agent) -> None:
    await first_cycle(agent)
    status, ctype, body = await agent.get("/metrics", accept="application/openmetrics-text")
    assert status == 200
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    status, ctype, body = await agent.get("/metrics")
    assert ctype.startswith("text/plain")
    assert "# EOF" not in body
    status, _, body = await agent.get("/healthz")
    assert status == 200
    assert '"status": "ok"' in body


async def test_sighup_with_a_broken_config_keeps_probing_with_the_old_one(agent: Agent) -> None:
    await first_cycle(agent)
    agent.rewrite("agent: {interval: banana}\n")
    agent.proc.send_signal(signal.SIGHUP)

    async def refused() -> bool:
        s = await agent.samples()
        return value(s, "reachprobe_config_reloads_total", outcome="failure") == 1

    await until(refused, "the failed reload to be counted")
    before = value(await agent.samples(), "reachprobe_cycle_duration_seconds_count")

    async def still_cycling() -> bool:
        s = await agent.samples()
        return value(s, "reachprobe_cycle_duration_seconds_count") >= before + 2

    await until(still_cycling, "two more cycles on the old config")
    s = await agent.samples()
    assert value(s, "reachprobe_target_up", target="site") == 1
    assert agent.proc.returncode is None


async def test_sighup_with_a_good_config_swaps_targets(agent: Agent) -> None:
    await first_cycle(agent)
    new = dict(agent.config, targets=[agent.config["targets"][0] | {"name": "renamed"}])
    agent.rewrite(new)
    agent.proc.send_signal(signal.SIGHUP)

    async def swapped() -> bool:
        s = await agent.samples()
        names = {dict(lbl).get("target") for n, lbl in s}
        return value(s, "reachprobe_target_up", target="renamed") == 1 and "gone" not in names

    await until(swapped, "the renamed target to replace the old ones")


async def test_sigterm_stops_cleanly(agent: Agent) -> None:
    await first_cycle(agent)
    agent.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(agent.proc.wait(), DEADLINE) == 0
    stderr = (await agent.proc.stderr.read()).decode()
    assert "Traceback" not in stderr
    assert "stopped" in stderr


def test_run_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"agent": {"listen": f"127.0.0.1:{port}"}}))
        done = subprocess.run(
            [sys.executable, "-m", "agent", "run", "-c", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=DEADLINE,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
