"""Benchmark: memory and CPU of reachprobe at 100, 1,000 and 10,000 `tcp:` targets.

For each size: a `check` process (peak RSS and user+sys CPU, from `os.wait4`), then a running
agent (`python -m agent run`): its RSS after three cycles, its CPU per cycle, and the CPU one
/metrics scrape costs it (from /proc/PID/stat around the scrape, the median of five, asked for
as Prometheus asks: OpenMetrics first).

Nothing leaves loopback: the targets are `127.0.x.y:PORT` (all of 127.0.0.0/8 is local on
Linux) and one responder process accepting on PORT of the wildcard address closes every
connection at once; the test resolver is set to a closed loopback port and never asked (the
targets are addresses), the vantage checks are off. Every process is stopped at the end, also
on error; each wait is bounded.

    python bench/scale.py                          # 100, 1,000, 10,000 targets: ~3 min
    python bench/scale.py --sizes 1000 --tree /tmp/main-tree   # another checkout's agent
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from prefix import start_responder

REPO_ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# What Prometheus sends: OpenMetrics preferred, the text format as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
CYCLES = 3
SCRAPES = 5
CHECK_TIMEOUT = 300.0
RUN_TIMEOUT = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, count: int, port: int, listen: str | None, interval: str) -> Path:
    """An agent config of `count` targets `127.0.x.y:port`, everything on loopback."""
    targets = [
        {"name": f"t{i:05d}", "tcp": f"127.0.{1 + i // 250}.{1 + i % 250}:{port}"}
        for i in range(count)
    ]
    config = {
        "agent": {
            "vantage": "bench", "listen": listen, "interval": interval, "jitter": "0s",
            "timeout": "2s", "concurrency": 256,
        },
        "resolvers": {
            "test": {"type": "udp", "servers": [f"127.0.0.1:{free_port()}"]},
            "bogon_exempt": ["127.0.0.0/8"],
        },
        "targets": targets,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def cpu_seconds(pid: int) -> float:
    """utime+stime of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(field)


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def measure_check(tree: Path, config: Path, count: int) -> tuple[float, float]:
    """A `check` run: its peak RSS (MiB) and CPU (s). Every target must be reachable."""
    output = config.with_suffix(".json")
    with output.open("wb") as out:
        process = subprocess.Popen(
            agent_command("check", "--config", str(config), "--format", "json"),
            cwd=tree, stdout=out, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + CHECK_TIMEOUT
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"check of {count} targets: no end in {CHECK_TIMEOUT:.0f} s")
            time.sleep(0.05)
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(10)
    reports = json.loads(output.read_text())["targets"]
    reachable = sum(1 for r in reports if r["verdict"] == "reachable")
    if process.returncode != 0 or reachable != count:
        raise RuntimeError(f"check: exit {process.returncode}, {reachable}/{count} reachable")
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def fetch(url: str, accept: str = "") -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def cycles_done(listen: str) -> int:
    try:
        return int(json.loads(fetch(f"http://{listen}/healthz"))["cycles"])
    except (OSError, ValueError, KeyError):
        return 0  # not listening yet


def measure_run(tree: Path, directory: Path, count: int, port: int) -> dict[str, float]:
    """A running agent: RSS after CYCLES cycles, CPU per cycle, CPU per scrape."""
    listen = f"127.0.0.1:{free_port()}"
    interval = f"{max(5, count // 1000 * 2)}s"
    config = write_config(directory / f"run-{count}.yaml", count, port, listen, interval)
    agent = subprocess.Popen(
        agent_command("run", "--config", str(config), "--log-level", "error"),
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        marks: dict[int, float] = {}
        while len(marks) < CYCLES or max(marks) < CYCLES:
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError(f"agent with {count} targets: no {CYCLES} cycles in time")
            done = cycles_done(listen)
            if done and done not in marks:
                marks[done] = cpu_seconds(agent.pid)
            time.sleep(0.2)
        rss = rss_mib(agent.pid)
        first, last = min(marks), max(marks)
        per_cycle = (marks[last] - marks[first]) / max(1, last - first)
        scrapes = {}
        for name, accept in (("openmetrics", PROMETHEUS_ACCEPT), ("text", "")):
            costs = []
            for _ in range(SCRAPES):
                before = cpu_seconds(agent.pid)
                body = fetch(f"http://{listen}/metrics", accept)
                costs.append(cpu_seconds(agent.pid) - before)
            scrapes[name] = statistics.median(costs)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return {
            "rss": rss, "hwm": rss_mib(agent.pid, "VmHWM"), "cycle_cpu": per_cycle,
            "scrape_om": scrapes["openmetrics"], "scrape_text": scrapes["text"],
            "series": series, "bytes": len(body),
        }  # fmt: skip
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({model})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--tree", type=Path, default=REPO_ROOT,
                        help="the checkout whose agent runs (default: this one)")  # fmt: skip
    parser.add_argument("--skip-run", action="store_true", help="only the `check` figures")
    args = parser.parse_args()
    raise_fd_limit(4096)  # concurrency 256 sockets, with room for the agent's own
    print(f"{machine()}; agent from {args.tree}")
    print(f"{'targets':>8} {'check RSS MiB':>14} {'check CPU s':>12} {'run RSS MiB':>12} "
          f"{'CPU s/cycle':>12} {'scrape CPU s (OM/text)':>23} {'series':>8}")  # fmt: skip
    responder, port = start_responder()
    try:
        with tempfile.TemporaryDirectory(prefix="reachprobe-scale-") as tmp:
            directory = Path(tmp)
            for count in args.sizes:
                config = write_config(directory / f"check-{count}.yaml", count, port, None, "60s")
                check_rss, check_cpu = measure_check(args.tree, config, count)
                row = f"{count:>8} {check_rss:>14.1f} {check_cpu:>12.2f}"
                if not args.skip_run:
                    run = measure_run(args.tree, directory, count, port)
                    row += (f" {run['rss']:>12.1f} {run['cycle_cpu']:>12.2f} "
                            f"{run['scrape_om']:>11.2f}/{run['scrape_text']:<11.2f} "
                            f"{run['series']:>8.0f}")  # fmt: skip
                print(row, flush=True)
    finally:
        responder.kill()
        responder.join(5)
    print(
        "check: ru_maxrss and utime+stime of the child; run: VmRSS after "
        f"{CYCLES} cycles, CPU between the first and last of them per cycle, scrape CPU "
        f"the median of {SCRAPES} (clock tick {1 / CLOCK_TICKS:.2f} s)"
    )


if __name__ == "__main__":
    main()
