"""A real Prometheus in the `mon` namespace, scraping both agents with the project's rules.

It is our own instance (temp data dir, lab listen address), never the system service. Tests
ask it questions over its HTTP API from inside the namespace (`Prometheus.query`); a human can
reach it from the host through `Forwarder`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.lab import netns, procs, world
from tests.lab.procs import REPO_ROOT, LabProcess

RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "reachprobe.rules.yml"
ALERTS_FILE = REPO_ROOT / "deploy" / "prometheus" / "reachprobe.alerts.yml"
SCRAPE_INTERVAL_SECONDS = 1.0
JOB = "reachprobe"


class QueryError(RuntimeError):
    """Prometheus answered a query with an error."""


def prometheus_config(agent_addresses: list[tuple[str, int]]) -> dict[str, object]:
    """Prometheus config: both agents in one job, the project's rules and alerts, 1s everything."""
    interval = f"{SCRAPE_INTERVAL_SECONDS:g}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(RULES_FILE), str(ALERTS_FILE)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"{h}:{p}" for h, p in agent_addresses]}],
            }
        ],
    }


class Prometheus:
    """Our Prometheus process and a small client for its query API."""

    def __init__(self, ns: str, directory: Path, agent_addresses: list[tuple[str, int]]) -> None:
        self.ns = ns
        self.address = world.PROMETHEUS_LISTEN
        self.directory = directory
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(prometheus_config(agent_addresses)))
        self.process: LabProcess | None = None

    @staticmethod
    def binary() -> str | None:
        """The prometheus binary, or None when it is not installed."""
        return shutil.which("prometheus")

    def start(self) -> None:
        """Start Prometheus (no wait; see `wait_ready`)."""
        binary = self.binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (Debian package prometheus)")
        host, port = self.address
        argv = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.directory / 'tsdb'}",
            f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = LabProcess("prometheus", self.ns, argv, self.directory / "prometheus.log")

    def stop(self) -> None:
        """Stop Prometheus (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def _get(self, path: str, params: dict[str, str] | None = None) -> object:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = netns.http_get(self.ns, self.address, path + query)
        payload = json.loads(body) if body else {}
        if status != 200 or payload.get("status") != "success":
            raise QueryError(f"{path}{query}: HTTP {status}: {payload.get('error', body[:200])}")
        return payload["data"]

    def wait_ready(self, deadline: float) -> None:
        """Poll /-/ready until Prometheus serves queries."""
        assert self.process is not None
        procs.wait_http_ok(self.process, self.address, "/-/ready", deadline, "prometheus not ready")

    def query(self, expr: str) -> list[dict]:
        """An instant query; returns the result vector, each item `{"metric", "value"}`."""
        data = self._get("/api/v1/query", {"query": expr})
        assert isinstance(data, dict)
        if data["resultType"] != "vector":
            raise QueryError(f"{expr}: expected a vector, got {data['resultType']}")
        return data["result"]

    def values(self, expr: str, label: str) -> dict[str, float]:
        """Query `expr` and map each series' `label` value to its sample value."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def rule_names(self) -> set[str]:
        """Names of the recording rules Prometheus has loaded."""
        data = self._get("/api/v1/rules")
        assert isinstance(data, dict)
        return {rule["name"] for group in data["groups"] for rule in group["rules"]}

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict]], bool],
        timeout: float,
        what: str = "",
    ) -> list[dict]:
        """Poll `expr` until `predicate(result)` holds; return the result or raise.

        Bounded by `timeout` seconds; the error shows the last result seen.
        """
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what or expr}: not true after {timeout:g}s; last result: {_short(result)}"
                )
            time.sleep(0.25)


def _short(result: list[dict]) -> str:
    return "; ".join(f"{r['metric']} = {r['value'][1]}" for r in result[:10]) or "(empty)"


class Forwarder:
    """Forward a host loopback port to Prometheus inside its namespace, for a human's browser.

    Listens on 127.0.0.1 only; each accepted connection is relayed to a socket made in the
    namespace. Threads are daemons and stop with `close`.
    """

    def __init__(self, ns: str, remote: tuple[str, int], local_port: int) -> None:
        self.ns = ns
        self.remote = remote
        self.listener = socket.create_server(("127.0.0.1", local_port))
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = netns.connect(self.ns, self.remote)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # a browser may keep a connection idle
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        """Stop accepting connections."""
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
