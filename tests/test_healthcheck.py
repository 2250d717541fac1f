"""`python -m agent.healthcheck`, the container's HEALTHCHECK, against a real agent on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.healthcheck import health_url, main


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        (("127.0.0.1", 9787), "http://127.0.0.1:9787/healthz"),
        (("0.0.0.0", 9000), "http://127.0.0.1:9000/healthz"),
        (("::", 9787), "http://[::1]:9787/healthz"),
        (("::1", 1), "http://[::1]:1/healthz"),
    ],
)
def test_health_url_asks_loopback_for_a_wildcard(listen: tuple[str, int], url: str) -> None:
    assert health_url(listen) == url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, listen: str | None) -> Path:
    dns = {"type": "udp", "servers": ["127.0.0.1:9"]}
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"listen": listen, "interval": "1s", "timeout": "500ms"},
                "resolvers": {"test": dns, "control": dns},
                "targets": [{"name": "closed", "tcp": "127.0.0.1:9"}],
            }
        )
    )
    return path


def test_unhealthy_when_nothing_listens(tmp_path: Path) -> None:
    assert main([str(write_config(tmp_path / "c.yaml", f"127.0.0.1:{free_port()}"))]) == 1


def test_push_only_agent_counts_as_healthy(tmp_path: Path) -> None:
    assert main([str(write_config(tmp_path / "c.yaml", None))]) == 0


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {nonsense: 1}\n")
    assert main([str(bad)]) == 2
    assert main([]) == 2


def test_healthy_against_a_running_agent(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", f"127.0.0.1:{free_port()}")
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        code = main([str(config)])
        while code != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            code = main([str(config)])
        assert code == 0
    finally:
        agent.terminate()
        agent.wait(timeout=10)
