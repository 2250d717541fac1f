"""The install a user does: the wheel, installed non-editable in a fresh virtualenv, used from a
directory outside the source tree.

The wheel is built and installed once for the module. Nothing here may import the source tree:
every command runs with the installed interpreter, in a scratch directory, without PYTHONPATH.
The loopback check runs the installed agent against the installed simlab's DNS and HTTPS
servers, with an explicit config (never the shipped public targets or the system resolver).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from uv import find_uv_bin

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# Bounds: a wheel build or an install from a cold uv cache, one CLI run, a server's start.
BUILD_TIMEOUT = 180
RUN_TIMEOUT = 30
READY_TIMEOUT = 15


@dataclass(frozen=True)
class Install:
    """A virtualenv holding the installed wheel, and a directory outside the source tree."""

    venv: Path
    workdir: Path

    def bin(self, name: str) -> str:
        """A script of the virtualenv."""
        return str(self.venv / "bin" / name)

    def env(self) -> dict[str, str]:
        """The caller's environment without anything that could reach the source tree."""
        drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
        return {k: v for k, v in os.environ.items() if k not in drop and not k.endswith("_proxy")}

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a virtualenv script (`reachprobe`, `python`) in the scratch directory."""
        return subprocess.run(
            [self.bin(argv[0]), *argv[1:]],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built the way a release would be (PEP 517, isolated build)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), REPO_ROOT],
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    (built,) = out.glob("reachprobe-*.whl")
    return built


@pytest.fixture(scope="module")
def install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Install:
    """A fresh virtualenv with the wheel (and its dependencies) installed, not editable."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    uv = find_uv_bin()
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=60
    )
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    return Install(venv, tmp_path_factory.mktemp("elsewhere"))


def project_version() -> str:
    """The version pyproject.toml declares."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_packages_come_from_the_virtualenv_not_the_source_tree(install: Install) -> None:
    code = "import agent, probes, simlab; print(agent.__file__, probes.__file__, simlab.__file__)"
    proc = install.run("python", "-c", code)
    assert proc.returncode == 0, proc.stderr
    for path in map(Path, proc.stdout.split()):
        assert path.is_relative_to(install.venv), path
        assert not path.is_relative_to(REPO_ROOT), path


def test_version(install: Install) -> None:
    proc = install.run("reachprobe", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["reachprobe", project_version()]


def test_validate_the_built_in_config(install: Install) -> None:
    """The default config ships inside the wheel, and validates there."""
    shipped = yaml.safe_load((REPO_ROOT / "config" / "default.yaml").read_text(encoding="utf-8"))
    proc = install.run("reachprobe", "validate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"built-in default config: ok ({len(shipped['targets'])} targets)"


def test_config_default_prints_the_shipped_config_without_the_source_tree(
    install: Install,
) -> None:
    proc = install.run("reachprobe", "config", "default")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (REPO_ROOT / "config" / "default.yaml").read_text(encoding="utf-8")


def test_the_wheel_carries_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        licenses = [n for n in archive.namelist() if n.endswith("LICENSE")]
    assert licenses, "no LICENSE in the wheel"


def test_simlab_help(install: Install) -> None:
    proc = install.run("python", "-m", "simlab", "--help")
    assert proc.returncode == 0, proc.stderr
    for kind in ("dns", "doh", "web", "certs", "closed-port"):
        assert kind in proc.stdout, kind


def _wait_ready(process: subprocess.Popen[str], log: Path, timeout: float) -> str:
    """The server's `ready ...` line (its last word is the address), or raise with its log."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{process.args}: no ready line (exit {process.poll()}):\n{tail}")
    return line.split()[-1]


@pytest.fixture(scope="module")
def servers(install: Install) -> Iterator[dict[str, str]]:
    """The installed simlab's DNS server and an HTTPS server for `valid.test` on loopback,
    as {"dns": "ADDR:PORT", "web": "https://ADDR:PORT/"}."""
    pki = install.workdir / "pki"
    leaf = ("--stem", "web", "--name", "valid.test")
    certs = install.run("python", "-m", "simlab", "certs", "--dir", str(pki), *leaf)
    assert certs.returncode == 0, certs.stderr
    zone = install.workdir / "zone.yaml"
    zone.write_text(yaml.safe_dump({"valid.test": [HOST], "nx.test": "nxdomain"}))
    argvs = {
        "dns": ["dns", "--listen", f"{HOST}:0", "--zone", str(zone)],
        "web": [
            *("web", "--listen", f"{HOST}:0", "--mode", "valid"),
            *("--cert", str(pki / "web.pem"), "--key", str(pki / "web-key.pem")),
        ],
    }
    processes: list[subprocess.Popen[str]] = []
    where: dict[str, str] = {}
    try:
        for name, argv in argvs.items():
            log = install.workdir / f"{name}.log"
            with log.open("w") as stderr:
                process = subprocess.Popen(
                    [install.bin("python"), "-m", "simlab", *argv],
                    cwd=install.workdir,
                    env=install.env(),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            processes.append(process)
            where[name] = _wait_ready(process, log, READY_TIMEOUT)
        yield where
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def loopback_config(servers: dict[str, str], pki: Path) -> dict[str, Any]:
    """An agent config probing the loopback servers through the loopback resolver only."""
    web_port = servers["web"].rstrip("/").rsplit(":", 1)[1]
    return {
        "agent": {"vantage": "installed", "role": "test", "timeout": "2s", "listen": None},
        "resolvers": {
            "test": {"type": "udp", "servers": [servers["dns"]]},
            # The servers answer with loopback addresses, which are bogons anywhere else.
            "bogon_exempt": [f"{HOST}/32"],
            "injection_window": "100ms",
        },
        "tls": {"ca_file": str(pki / "ca.pem")},
        "targets": [
            {
                "name": "web",
                "url": f"https://valid.test:{web_port}/",
                "expect_status": [200],
                "expect_body": "hello from the reachprobe test server",
            },
            {"name": "gone", "url": f"https://nx.test:{web_port}/"},
        ],
    }


def test_check_json_against_loopback_servers(install: Install, servers: dict[str, str]) -> None:
    config = install.workdir / "agent.yaml"
    config.write_text(yaml.safe_dump(loopback_config(servers, install.workdir / "pki")))
    proc = install.run("reachprobe", "check", "--config", str(config), "--format", "json")
    # One target is not reachable, so `check` exits 1 (and still prints the whole result).
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout, proc.stderr
    output = json.loads(proc.stdout)
    assert output["agent"]["vantage"] == "installed"
    assert output["agent"]["version"] == project_version()
    targets = {t["name"]: t for t in output["targets"]}
    assert targets["web"]["verdict"] == "reachable"
    assert [(s["step"], s["result"]) for s in targets["web"]["steps"]] == [
        ("dns", "ok"),
        ("tcp", "ok"),
        ("tls", "ok"),
        ("http", "ok"),
    ]
    assert targets["gone"]["verdict"] == "dns_blocking"
    assert targets["gone"]["steps"][0]["result"] == "dns_nxdomain"
