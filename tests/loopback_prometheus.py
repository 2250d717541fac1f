"""A real Prometheus remote-write receiver on loopback for the push tests: Debian's
prometheus with `--web.enable-remote-write-receiver` and its own temp storage (never the
system service)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.parse
from pathlib import Path

import aiohttp

PROMETHEUS = shutil.which("prometheus")


class LoopbackPrometheus:
    """Our own Prometheus process on loopback, a receiver only (it scrapes nothing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (directory / "prometheus.yml").write_text("global: {}\n")
        self.process: asyncio.subprocess.Process | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert PROMETHEUS is not None
        self.process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.directory / "prometheus.log").open("ab"),
        )
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                assert self.process.returncode is None, (
                    self.directory / "prometheus.log"
                ).read_text()
                try:
                    async with session.get(f"{self.base}/-/ready") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("prometheus not ready in 30s")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def query(self, expr: str, at: float) -> float:
        """An instant query at `at` (unix seconds) returning one value (0 for no result)."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{self.base}/api/v1/query?{params}") as response,
        ):
            payload = json.loads(await response.text())
        assert payload["status"] == "success", payload
        result = payload["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else 0.0

    async def samples(self, selector: str, window: float, at: float) -> list[tuple[float, float]]:
        """The (timestamp, value) samples of the one series `selector` in the `window`
        seconds before `at`, oldest first (empty when none)."""
        params = urllib.parse.urlencode({"query": f"{selector}[{int(window)}s]", "time": f"{at}"})
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{self.base}/api/v1/query?{params}") as response,
        ):
            payload = json.loads(await response.text())
        assert payload["status"] == "success", payload
        result = payload["data"]["result"]
        assert len(result) <= 1, result
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []
