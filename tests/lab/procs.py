"""Long-running lab processes (servers, agents, Prometheus) started inside namespaces.

Each process gets a log file and dies with the process that started it (PR_SET_PDEATHSIG), so
even a test run killed with SIGKILL leaves no lab process behind; `stop_all` runs at exit for
the ordinary cases.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.lab import netns

PR_SET_PDEATHSIG = 1
REPO_ROOT = Path(__file__).resolve().parents[2]

_live: list[LabProcess] = []


def die_with_parent() -> None:
    """preexec_fn for Popen: the child gets SIGKILL when the process that started it dies."""
    # Runs in the child between fork and exec; `ip netns exec` execs the command in place,
    # so the setting survives into the server or agent itself. The "parent" is the forking
    # *thread*: start lab processes from a thread that lives as long as the lab (the main one).
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class LabProcess:
    """One process running in a namespace, with its output in `log_path`."""

    def __init__(
        self, name: str, ns: str, argv: Sequence[str], log_path: Path, *, cwd: Path = REPO_ROOT
    ) -> None:
        self.name = name
        self.ns = ns
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # Logs are appended to across restarts; this run's output starts here.
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                [*netns.ns_prefix(ns), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=lab_env(),
                # Its own session: a Ctrl-C in the terminal reaches the test run, which then
                # stops the lab in order, instead of killing servers under a live agent.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        _live.append(self)

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines this run of the process wrote."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if not self.running:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; log {self.log_path}:\n"
                + self.log_tail()
            )

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; idempotent."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(grace)
        if self in _live:
            _live.remove(self)


def start_one_shot(ns: str, argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start a short command in `ns` (a `check`, a prefix sweep) with stdout and stderr piped.

    It dies with the process that started it, like every lab process.
    """
    return subprocess.Popen(
        [*netns.ns_prefix(ns), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=lab_env(),
        preexec_fn=die_with_parent,
    )


def lab_env() -> dict[str, str]:
    """The environment of lab processes: the repo importable, unbuffered output, no proxies."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_argv(*args: str) -> list[str]:
    """argv running this interpreter (the venv's) with `args`."""
    return [sys.executable, *args]


def stop_all() -> None:
    """Stop every lab process this interpreter started (newest first)."""
    for proc in reversed(list(_live)):
        proc.stop()


atexit.register(stop_all)


def wait_http_ok(
    process: LabProcess, address: tuple[str, int], path: str, deadline: float, what: str
) -> None:
    """Poll GET `path` on `address` from the process's namespace until it answers 200.

    Fails at once if the process died; on timeout the error carries the process's log.
    """
    last: Exception | None = None
    while time.monotonic() < deadline:
        process.check_running()
        try:
            if netns.http_get(process.ns, address, path, 1.0)[0] == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what}: {last}\n{process.log_tail()}")
