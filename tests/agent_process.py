"""`reachprobe run` / `check` as subprocesses, for black-box tests (security, faults, identity).

The agent's log goes to a file (never a pipe a test might forget to drain), so that tests can
read it whole afterwards and grep it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 20.0  # seconds any awaited condition may take before the test fails

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def agent_argv(command: str, config: Path, *extra: str) -> list[str]:
    """The argv of `reachprobe COMMAND --config CONFIG ...` run from this checkout."""
    return [sys.executable, "-m", "agent", command, "--config", str(config), *extra]


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as YAML to `path`; returns `path`."""
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class RunningAgent:
    """A `reachprobe run` subprocess and where it serves."""

    proc: asyncio.subprocess.Process
    base: str
    log_path: Path
    ssl_context: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = None
    pages: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        """Everything the agent has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def get(
        self, path: str, *, auth: tuple[str, str] | bool | None = True, **kwargs: Any
    ) -> tuple[int, str]:
        """GET `path` with the agent's TLS context and basic auth (user, password), unless
        given others (`auth=None`: none); returns status and body."""
        kwargs.setdefault("ssl", self.ssl_context if self.ssl_context is not None else False)
        pair = self.auth if auth is True else auth
        if isinstance(pair, tuple):
            token = base64.b64encode(":".join(pair).encode()).decode()
            kwargs.setdefault("headers", {})["Authorization"] = f"Basic {token}"
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.base + path, **kwargs) as response,
        ):
            body = await response.text()
        self.pages.append(body)
        return response.status, body

    async def samples(self) -> Samples:
        """The parsed /metrics samples, keyed by (name, sorted labels)."""
        status, text = await self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def wait_cycles(self, count: int, deadline: float = DEADLINE) -> Samples:
        """Wait until `count` cycles have finished (by the cycle histogram); returns samples."""

        async def enough() -> Samples | None:
            s = await self.samples()
            done = s.get(("reachprobe_cycle_duration_seconds_count", ()), 0)
            return s if done >= count else None

        return await until(enough, f"{count} finished cycles", deadline, self)

    async def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM, then wait; returns (exit code, seconds it took). Kills on timeout."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"the agent did not exit within {timeout}s of SIGTERM") from None
        return code, time.monotonic() - start

    async def kill(self) -> None:
        """Kill the agent if it still runs."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def until(
    check: Callable[[], Any],
    what: str,
    deadline: float = DEADLINE,
    agent: RunningAgent | None = None,
) -> Any:
    """Poll the coroutine function `check` until it returns a truthy value, which is returned.

    Fails after `deadline` seconds, or at once if `agent` has exited (with its log).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: object = None
    while loop.time() < end:
        if agent is not None and agent.proc.returncode is not None:
            raise AssertionError(f"the agent exited ({agent.proc.returncode}):\n{agent.log}")
        try:
            result = await check()
        except (aiohttp.ClientError, OSError, AssertionError) as exc:
            result, last = None, exc  # not serving yet
        if result:
            return result
        await asyncio.sleep(0.2)
    log = f"\nagent log:\n{agent.log[-3000:]}" if agent is not None else ""
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r}){log}")


async def start_agent(
    config_path: Path,
    listen: tuple[str, int],
    *,
    scheme: str = "http",
    ssl_context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    extra: Sequence[str] = ("--log-level", "debug"),
) -> RunningAgent:
    """Start `reachprobe run` on `config_path` and return once it serves /healthz."""
    log_path = config_path.with_suffix(".log")
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *agent_argv("run", config_path, *extra),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=preexec_fn,
        )
    host, port = listen
    agent = RunningAgent(proc, f"{scheme}://{host}:{port}", log_path, ssl_context, auth)

    async def serving() -> bool:
        status, _ = await agent.get("/healthz")
        return status in (200, 503)

    try:
        await until(serving, "the agent to serve", agent=agent)
    except BaseException:
        await agent.kill()
        raise
    return agent


def run_cli(
    command: str, config_path: Path, *extra: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `reachprobe COMMAND` to completion (check, validate); returns the finished process."""
    return subprocess.run(
        agent_argv(command, config_path, *extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


async def check_json(config_path: Path, timeout: float = 60.0) -> tuple[int, dict[str, Any], str]:
    """`reachprobe check --format json` from async code (whose loop may host the servers);
    returns exit code, the parsed JSON and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *agent_argv("check", config_path, "--format", "json"),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"check did not finish within {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, json.loads(out), err.decode(errors="replace")


def results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The check JSON's targets by name."""
    return {t["name"]: t for t in report["targets"]}


def fd_count(pid: int) -> int:
    """Open file descriptors of process `pid` (from /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
