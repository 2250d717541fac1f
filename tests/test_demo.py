"""`reachprobe demo` as a newcomer runs it: without privileges, offline, leaving nothing behind.

The agent runs as `nobody` when this machine's Python is reachable by that user; otherwise
(a Python under /root) as root with every capability dropped (setpriv), which still proves
that the demo needs no privilege: no raw socket, no low port, nothing but loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.test_status_page import parse

DEADLINE = 30.0
SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="dropping privileges needs root and setpriv"
)


def _reachable_by_others(path: Path) -> bool:
    """True when every directory up to `path` lets other users through, and `path` runs."""
    real = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (real, *real.parents))


def unprivileged(tmpdir: Path) -> list[str]:
    """The command prefix that runs a program without privileges (see the module)."""
    assert SETPRIV is not None
    drop = [SETPRIV, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    if _reachable_by_others(Path(sys.executable)):
        nobody = pwd.getpwnam("nobody")
        os.chown(tmpdir, nobody.pw_uid, nobody.pw_gid)
        return [*drop, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    return drop


@pytest.fixture
def tmpdir_env() -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh, empty TMPDIR for the demo, and the environment that points at it."""
    directory = Path(tempfile.mkdtemp(prefix="demo-tmpdir-"))
    env = {**os.environ, "TMPDIR": str(directory), "NO_COLOR": "1"}
    yield directory, env
    shutil.rmtree(directory, ignore_errors=True)


async def test_demo_once_prints_check_json_with_four_verdicts_and_leaves_nothing(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    tmpdir, env = tmpdir_env
    command = [*unprivileged(tmpdir), sys.executable, "-m", "agent", "demo", "--once", "-f", "json"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd="/"
    )
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert set(doc) == {"agent", "vantage", "targets", "prefixes"}
    assert doc["agent"]["vantage"] == "demo"
    verdicts = {t["name"]: t["verdict"] for t in doc["targets"]}
    assert len(set(verdicts.values())) >= 4, verdicts
    assert verdicts["messenger"] == "tls_blocking"
    assert verdicts["news"] == "reachable"
    addresses = [s["address"] for t in doc["targets"] for s in t["steps"] if s["address"]]
    assert addresses
    assert all(a.startswith("127.0.0.") for a in addresses), "a probe left loopback"
    assert list(tmpdir.iterdir()) == []


async def _first_line(stream: asyncio.StreamReader, starts: str) -> str:
    while line := (await stream.readline()).decode():
        if line.startswith(starts):
            return line
    raise AssertionError(f"no line starting with {starts!r}")


async def _page_with_rows(url: str) -> dict[str, list[str]]:
    """Poll the status page until the first cycle shows."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            async with session.get(url) as response:
                assert response.status == 200
                rows = parse(await response.text()).rows
            if len(rows) > 1:
                return rows
            await asyncio.sleep(0.2)


async def test_demo_serves_the_status_page_until_ctrl_c_and_cleans_up(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    tmpdir, env = tmpdir_env
    command = [*unprivileged(tmpdir), sys.executable, "-m", "agent", "demo"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(_first_line(proc.stdout, "reachprobe demo: open"), DEADLINE)
        url = line.split()[3]
        assert url.startswith("http://127.0.0.1:")
        assert any(tmpdir.iterdir()), "the demo's files should be in TMPDIR while it runs"
        rows = await asyncio.wait_for(_page_with_rows(url), DEADLINE)
        assert rows["messenger"][0] == "✗ blocked (TLS)"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert list(tmpdir.iterdir()) == []
