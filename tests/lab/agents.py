"""The real agent in the lab: its config, `reachprobe run` as a daemon, `check` as a one-shot.

Both run as `<this python> -m agent ...` inside a client namespace, always with an explicit lab
config whose resolvers are lab servers: the agent never sees the shipped default config or the
system resolver.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.lab import netns, procs, world
from tests.lab.procs import LabProcess, python_argv

# Short cycles keep the suite fast: a rule change shows in the metrics within one interval.
INTERVAL_SECONDS = 2.0
# Above Linux's initial SYN retransmission timeout (1s), so that a lost SYN is resent within
# the step: at 1s one lost SYN or SYN-ACK fails the TCP step however the agent confirms it,
# and 5% random loss read as blocking in 4% of target-cycles (docs/lab.md). Below the
# interval, so that a cycle ends before the next is due.
TIMEOUT_SECONDS = 1.5
INJECTION_WINDOW = "300ms"


@dataclass(frozen=True)
class Vantage:
    """Who an agent is: its namespace role and its agent section's identity."""

    role_ns: str
    vantage: str
    role: str
    country: str
    asn: str


CENSORED_VANTAGE = Vantage(world.CENSORED, "lab-censored", "test", "RU", "AS64500")
CONTROL_VANTAGE = Vantage(world.CONTROL, "lab-control", "control", "NL", "AS64501")


def agent_config(vantage: Vantage, ca_file: Path) -> dict[str, Any]:
    """The agent config (as YAML data) for one lab vantage."""
    host, port = world.AGENT_LISTEN[vantage.role_ns]
    return {
        "agent": {
            "vantage": vantage.vantage,
            "role": vantage.role,
            "country": vantage.country,
            "asn": vantage.asn,
            # A namespace address on the lab's private management link, which only the lab's
            # Prometheus reaches: the documented opt-out of TLS/basic auth (docs/security.md).
            "listen": f"{host}:{port}",
            "insecure_listen": True,
            "interval": f"{INTERVAL_SECONDS:g}s",
            "timeout": f"{TIMEOUT_SECONDS:g}s",
            "concurrency": 32,
        },
        "resolvers": {
            "test": {"type": "udp", "servers": [world.DNS_ADDRESS]},
            "control": {"type": "doh", "url": f"https://{world.DOH_ADDRESS}/dns-query"},
            # Every lab address is in 198.18.0.0/15 or 2001:db8::/32, bogons to OONI's list.
            "bogon_exempt": [world.LAB_NET, world.LAB_NET6],
            "injection_window": INJECTION_WINDOW,
        },
        "tls": {"ca_file": str(ca_file)},
        "targets": world.targets(),
        "blockpages": [{"name": "lab-isp", "pattern": world.BLOCKPAGE_PATTERN}],
        # Vantage health: both probes stay inside the lab (never the shipped defaults).
        "vantage": {
            "tcp_canary": world.TCP_CANARY,
            "nxdomain_probe_suffix": world.NXDOMAIN_PROBE_SUFFIX,
        },
    }


class Agent:
    """One vantage's agent: its config file, its daemon, and one-shot checks."""

    def __init__(self, vantage: Vantage, ns: str, directory: Path, ca_file: Path) -> None:
        self.vantage = vantage
        self.ns = ns
        self.config_file = directory / f"agent-{vantage.role_ns}.yaml"
        # The daemon's measurement log, for the OONI loader test (tests/lab/test_ooni_log.py).
        self.measurement_log = directory / f"measurements-{vantage.role_ns}.jsonl"
        config = agent_config(vantage, ca_file)
        config["measurement_log"] = {"path": str(self.measurement_log)}
        self.config_file.write_text(yaml.safe_dump(config))
        self.log_path = directory / f"agent-{vantage.role_ns}.log"
        self.listen = world.AGENT_LISTEN[vantage.role_ns]
        self.process: LabProcess | None = None

    def start(self) -> None:
        """Start `reachprobe run` in the agent's namespace (no wait; see `wait_serving`)."""
        if self.process is None or not self.process.running:
            argv = python_argv("-m", "agent", "run", "--config", str(self.config_file))
            self.process = LabProcess(f"agent-{self.vantage.role_ns}", self.ns, argv, self.log_path)

    def stop(self) -> None:
        """Stop the daemon (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def metrics_text(self, timeout: float = 3.0) -> str:
        """The agent's /metrics page, fetched from inside its own namespace."""
        status, body = netns.http_get(self.ns, self.listen, "/metrics", timeout)
        if status != 200:
            raise RuntimeError(f"{self.vantage.vantage} /metrics answered {status}")
        return body.decode()

    def wait_serving(self, deadline: float) -> None:
        """Poll /healthz until the agent answers; raise with its log if it died."""
        assert self.process is not None
        procs.wait_http_ok(
            self.process, self.listen, "/healthz", deadline, f"{self.vantage.vantage} not serving"
        )

    def log_tail(self) -> str:
        """The end of the daemon's log."""
        return self.process.log_tail() if self.process else ""

    def start_check(self, *names: str) -> PendingCheck:
        """Start `reachprobe check --format json` for `names` (all targets if none).

        Returns at once, so that checks at both vantages and Prometheus queries overlap.
        """
        argv = python_argv("-m", "agent", "check", "--config", str(self.config_file))
        for name in names:
            argv += ["--target", name]
        argv += ["--format", "json"]
        popen = procs.start_one_shot(self.ns, argv)
        return PendingCheck(self.vantage.vantage, popen)

    def check(self, *names: str, timeout: float = 30.0) -> CheckResult:
        """Run `reachprobe check --format json` for `names` and return its result."""
        return self.start_check(*names).result(timeout)


class PendingCheck:
    """A running `check` command."""

    def __init__(self, vantage: str, popen: subprocess.Popen[str]) -> None:
        self.vantage = vantage
        self.popen = popen

    def result(self, timeout: float = 30.0) -> CheckResult:
        """Wait (at most `timeout` seconds) for the check and parse its JSON report."""
        try:
            stdout, stderr = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError:
            raise RuntimeError(
                f"check at {self.vantage} printed no JSON (exit {self.popen.returncode}):\n"
                f"{stdout}\n{stderr}"
            ) from None
        return CheckResult(self.vantage, self.popen.returncode, report, stderr)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one `check --format json` run."""

    vantage: str
    exit_code: int
    report: dict
    stderr: str

    def target(self, name: str) -> dict:
        """The report entry of target `name`."""
        for entry in self.report.get("targets", []):
            if entry.get("name") == name:
                return entry
        raise KeyError(f"target {name!r} not in the check report: {self.report}")

    def verdict(self, name: str) -> str:
        """The verdict of target `name`."""
        return self.target(name)["verdict"]

    def step(self, name: str, step: str) -> dict:
        """The first report of `step` (dns, tcp, tls, http) for target `name`."""
        for entry in self.target(name)["steps"]:
            if entry["step"] == step:
                return entry
        raise KeyError(f"target {name!r} has no {step} step: {self.target(name)}")

    def results(self, name: str) -> dict[str, str]:
        """step -> result of target `name` (the first report of each step)."""
        out: dict[str, str] = {}
        for entry in self.target(name)["steps"]:
            out.setdefault(entry["step"], entry["result"])
        return out
