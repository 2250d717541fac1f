"""Clean exits: SIGINT and SIGTERM in every command end with one line and the documented code
(README's commands section), and a reader that closes stdout early ends the command quietly.
The real CLI in a subprocess; everything it contacts listens on loopback."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import yaml

from simlab.net import closed_port, format_hostport

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "agent"]
WAIT = 20.0  # a bound on waiting for the agent to get busy, and on its exit after a signal
SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A loopback port whose connections the kernel accepts and nobody ever answers: a TLS
    handshake to it hangs until the agent's timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server


def write_config(tmp_path: Path, targets: list[dict[str, object]]) -> Path:
    dead = format_hostport("127.0.0.1", closed_port("127.0.0.1"))
    config = {
        "agent": {"vantage": "exits", "timeout": "15s", "listen": "127.0.0.1:0"},
        "resolvers": {"test": {"type": "udp", "servers": [dead]}},
        "targets": targets,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def stop(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, str]:
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"no exit within {WAIT}s of {sig.name}: {err}")
    return process.returncode, out, err


def sockets_of(pid: int) -> int:
    """How many sockets the process has open now."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:  # closed while we looked
            continue
    return count


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if condition():
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail("the agent never got busy")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_check_stopped_mid_cycle(
    tmp_path: Path, silent_listener: socket.socket, sig: signal.Signals
) -> None:
    port = silent_listener.getsockname()[1]
    hang = {"name": "hang", "host": "127.0.0.1", "port": port, "tls": True}
    path = write_config(tmp_path, [hang])
    process = start("check", "--config", str(path))
    # The connection waiting in the listener's queue: the agent is inside its cycle.
    wait_until(lambda: select.select([silent_listener], [], [], 0)[0], process)
    code, out, err = stop(process, sig)
    assert code == 128 + sig
    assert err == f"reachprobe check: stopped by {sig.name}\n"
    assert out == ""


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_demo_once_stopped_mid_cycle(sig: signal.Signals) -> None:
    process = start("demo", "--once")
    # The demo world's six servers are listening: the event loop runs, the cycle starts.
    wait_until(lambda: sockets_of(process.pid) >= 6, process)
    code, _, err = stop(process, sig)
    assert code == 128 + sig
    assert err == f"reachprobe demo --once: stopped by {sig.name}\n"


def wait_for_line(stream: IO[str] | None, text: str, process: subprocess.Popen[str]) -> None:
    assert stream is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        line = stream.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"never printed {text!r}: {process.communicate()}")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_run_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    tcp = format_hostport("127.0.0.1", closed_port("127.0.0.1"))
    path = write_config(tmp_path, [{"name": "closed", "tcp": tcp}])
    process = start("run", "--config", str(path))
    wait_for_line(process.stderr, "serving the status page", process)
    code, _, err = stop(process, sig)
    assert code == 0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"stopped by {sig.name}")


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_demo_serving_stops_cleanly(sig: signal.Signals) -> None:
    process = start("demo")
    wait_for_line(process.stdout, "open http", process)
    code, _, err = stop(process, sig)
    assert code == 0
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"stopped by {sig.name}")


def read_then_close(args: list[str], *, size: int = 0, lines: int = 0) -> tuple[int, str]:
    """Run the CLI, read `size` bytes or `lines` lines of its stdout, close the pipe (as
    `head` does), and return its exit code and stderr."""
    process = subprocess.Popen(
        [*AGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT
    )
    assert process.stdout is not None
    assert process.stderr is not None
    if size:
        process.stdout.read(size)
    for _ in range(lines):
        process.stdout.readline()
    process.stdout.close()
    try:
        err = process.stderr.read().decode()
        process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("no exit after its stdout closed")
    return process.returncode, err


def test_check_json_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    closed = closed_port("127.0.0.1")
    targets = [{"name": f"t{i}", "tcp": f"127.0.0.1:{closed}"} for i in range(200)]
    path = write_config(tmp_path, targets)
    code, err = read_then_close(["check", "--config", str(path), "--format", "json"], size=600)
    assert err == ""
    assert code == 128 + signal.SIGPIPE


def test_demo_once_json_into_a_closed_pipe_ends_quietly() -> None:
    code, err = read_then_close(["demo", "--once", "--format", "json"], lines=2)
    assert err == ""
    # The demo's document may fit in the pipe's buffer before the reader closes it: then
    # nothing failed and it exits 0.
    assert code in (0, 128 + signal.SIGPIPE)
