"""Benchmark: CPU per probe of a running reachprobe agent vs. prometheus-blackbox-exporter.

Issue 19's comparison: for 100, 1,000 and 10,000 targets and four kinds of probe (TCP, TLS,
HTTPS by IP, HTTPS by name), reachprobe and the blackbox_exporter at the same concurrency
against the same loopback targets, in the same run. Printed: CPU ms per probe of each, the
ratio reachprobe/blackbox, and peak RSS.

reachprobe is measured as a long-running agent: `python -m agent run` is started, its first
cycle (and with it the interpreter's start and the imports) is let pass, and its CPU
(/proc/PID/stat) is read at the end of each later cycle, found by polling `/healthz`'s cycle
count. blackbox is the exporter answering `/probe` requests, as in bench/cycle.py, whose set-up
(servers, configs, exporter) this script shares. Run: `python bench/compare.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import queue
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cycle import (
    BLACKBOX,
    HOST,
    MODULE,
    REPO_ROOT,
    RUN_TIMEOUT,
    Children,
    Sample,
    agent_config,
    blackbox_cycle,
    environment,
    proc_peak_rss_kib,
    reachprobe_cycle,
    start_blackbox,
    start_servers,
    target_name,
    write_blackbox_config,
)
from prefix import INSIDE, _reexec_in_private_namespace

from simlab.net import closed_port

KINDS = ("tcp", "tls", "https-ip", "https-name")
# The blackbox module each kind is compared with (it has no resolver setting of its own, so
# "by name" is compared with its by-IP probe: its http prober would ask the system resolver).
BLACKBOX_MODULE = {
    "tcp": "tcp_connect",
    "tls": "tls_connect",
    "https-ip": MODULE,
    "https-name": MODULE,
}


@dataclass
class Cell:
    """The rounds of one (size, kind, tool): CPU and wall seconds per cycle, peak RSS."""

    probes: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def cpu_ms(self) -> float:
        """The median over rounds of CPU ms per probe."""
        return 1000 * statistics.median(s.cpu for s in self.samples) / self.probes

    @property
    def rss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024


# --- a TCP responder on many ports --------------------------------------------------------------


def serve_tcp(count: int, ports_file: Path) -> None:
    """Listen on `count` loopback ports, accept and close every connection, until killed.

    A bare selector loop, so that the responder is never what limits the probers (simlab's
    asyncio server accepts only a few thousand connections a second)."""
    selector = selectors.DefaultSelector()
    listeners = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        sock.listen(256)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        listeners.append(sock)
    ports_file.write_text(" ".join(str(s.getsockname()[1]) for s in listeners))
    print("ready tcp", flush=True)
    while True:
        for key, _ in selector.select():
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                continue
            conn.close()


def start_tcp_responder(children: Children, count: int, workdir: Path) -> list[int]:
    ports_file = workdir / "tcp-ports"
    script = str(Path(__file__).resolve())
    argv = [sys.executable, script, "--serve-tcp", str(count), str(ports_file)]
    children.start(argv, re.compile(r"^ready tcp"))
    return [int(p) for p in ports_file.read_text().split()]


# --- targets of each kind ------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """One kind's targets, as reachprobe config entries and as blackbox `target=` values."""

    agent: list[dict]
    blackbox: list[str]


def targets_for(kind: str, n: int, tcp_ports: list[int], web_port: int) -> Targets:
    """`n` distinct targets: TCP on distinct ports of the responder, TLS as distinct names on
    the HTTPS server's one address, HTTPS as distinct paths (by IP) or names (by name)."""
    names = [f"t{i:04d}" for i in range(n)]
    ip_urls = [f"https://{HOST}:{web_port}/{name}" for name in names]
    if kind == "tcp":
        endpoints = [f"{HOST}:{port}" for port in tcp_ports[:n]]
        agent = [{"name": nm, "tcp": ep} for nm, ep in zip(names, endpoints, strict=True)]
        return Targets(agent, endpoints)
    if kind == "tls":
        agent = [{"name": nm, "host": HOST, "port": web_port, "tls": True} for nm in names]
        return Targets(agent, [f"{HOST}:{web_port}"] * n)
    if kind == "https-ip":
        urls = ip_urls
    else:
        urls = [f"https://{target_name(i)}:{web_port}/" for i in range(n)]
    pairs = zip(names, urls, strict=True)
    agent = [{"name": nm, "url": url, "expect_status": [200]} for nm, url in pairs]
    return Targets(agent, ip_urls)


# --- a running agent -----------------------------------------------------------------------------


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


class CycleWatch:
    """The cycle numbers a running agent logs ("cycle N done"), read from its stderr by a
    daemon thread: polling an endpoint would add the agent's serving CPU to what is measured."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.done: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            found = _CYCLE_DONE.search(line)
            if found:
                self.done.put(int(found.group(1)))

    def wait(self, number: int, deadline: float) -> None:
        """Return once cycle `number` has been logged; fail at `deadline`."""
        while True:
            try:
                if self.done.get(timeout=max(0.0, deadline - time.monotonic())) >= number:
                    return
            except queue.Empty:
                raise RuntimeError(f"the agent did not finish cycle {number} in time") from None


_CYCLE_DONE = re.compile(r"cycle (\d+) done")


def task_cpu(pid: int) -> float:
    """CPU seconds of `pid`'s threads from /proc/PID/task/*/schedstat, in nanoseconds rather
    than /proc/PID/stat's clock ticks (10 ms): a 100-target TCP cycle takes about 20 ms."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int(stat.read_text().split()[0])
    return total / 1e9


def agent_sample(config: Path, port: int, probes: int, cycles: int, loop: str) -> Sample:
    """Start `agent run` on event loop `loop`, let its first cycle pass, and measure the next
    `cycles`: CPU per cycle from /proc between cycle ends. Every target must be up at the end."""
    argv = [sys.executable, "-m", "agent", "run", "--config", str(config)]
    env = {**os.environ, "REACHPROBE_EVENT_LOOP": loop}
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        watch = CycleWatch(proc)
        deadline = time.monotonic() + RUN_TIMEOUT * (cycles + 1)
        watch.wait(1, deadline)
        cpu0, start = task_cpu(proc.pid), time.perf_counter()
        watch.wait(1 + cycles, deadline)
        cpu, wall = task_cpu(proc.pid) - cpu0, time.perf_counter() - start
        rss = proc_peak_rss_kib(proc.pid)
        up = re.findall(r"^reachprobe_target_up\{.*\} 1\.0$", _get(port, "/metrics"), re.M)
        if len(up) != probes:
            raise RuntimeError(f"{len(up)}/{probes} targets up in the running agent")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return Sample(wall / cycles, cpu / cycles, rss)


def blackbox_sample(
    box: tuple[int, int], targets: list[str], kind: str, cycles: int, concurrency: int
) -> Sample:
    """`cycles` passes over `targets`, one `/probe` each; CPU and wall per pass."""
    pid, port = box
    passes = [
        blackbox_cycle(pid, port, targets, concurrency, BLACKBOX_MODULE[kind])
        for _ in range(cycles)
    ]
    return Sample(
        sum(s.wall for s in passes) / len(passes),
        sum(s.cpu for s in passes) / len(passes),
        max(s.maxrss_kib for s in passes),
    )


# --- the run -------------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (inherited by every child); return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tune_private_namespace() -> None:
    """In the bench's own network namespace (never the host's): loopback up, every port
    ephemeral, and TIME_WAIT ports reusable. Each probe closes its connection, and three
    cycles of 10,000 connections to the one HTTPS server's address and port leave more
    TIME_WAIT ports than the default range (32768-60999) holds: connects then fail with
    EADDRNOTAVAIL, for reachprobe and blackbox alike."""
    subprocess.run(["ip", "link", "set", "dev", "lo", "up"], check=True, timeout=10)
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("1024 65535")
    Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("1")


def measure_size(
    n: int, children: Children, workdir: Path, servers: dict, args: argparse.Namespace
) -> dict[tuple[str, str], Cell]:
    """Every kind and tool for `n` targets, rounds interleaved: {(kind, tool): cell}."""
    cells: dict[tuple[str, str], Cell] = {}
    configs: dict[str, tuple[Path, int, Targets]] = {}
    for kind in args.kinds:
        targets = targets_for(kind, n, servers["tcp_ports"], servers["web_port"])
        port = closed_port(HOST)
        # A short interval keeps small runs short; large cycles outrun it and follow each
        # other at once. The timeout is the interval: it may not be longer.
        interval = "1s" if n <= args.large else "3s"
        agent = {"listen": f"{HOST}:{port}", "interval": interval, "timeout": interval}
        agent["jitter"] = "0s"
        config = agent_config(servers["ca_file"], servers["dns_port"], targets.agent, args, **agent)
        path = workdir / f"{kind}-{n}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs[kind] = (path, port, targets)
        for loop in args.loops:
            cells[(kind, loop)] = Cell(n)
        cells[(kind, "blackbox")] = Cell(n)
        if args.check:
            check_path = workdir / f"{kind}-{n}-check.yaml"
            del config["agent"]["listen"]
            check_path.write_text(yaml.safe_dump(config, sort_keys=False))
            cells[(kind, "check")] = Cell(n)
    rounds = args.rounds if n <= args.large else args.large_rounds
    # Enough cycles for a figure well above the clocks' resolution.
    cycles = max(args.cycles, math.ceil(args.min_probes / n))
    for _ in range(rounds):
        for kind, (path, port, targets) in configs.items():
            for loop in args.loops:
                sample = agent_sample(path, port, n, cycles, loop)
                cells[(kind, loop)].samples.append(sample)
            box = blackbox_sample(
                servers["blackbox"], targets.blackbox, kind, cycles, args.concurrency
            )
            cells[(kind, "blackbox")].samples.append(box)
            if args.check:
                check = workdir / f"{kind}-{n}-check.yaml"
                cells[(kind, "check")].samples.append(reachprobe_cycle(check, n, workdir))
    return cells


LABELS = {
    "tcp": "TCP",
    "tls": "TLS",
    "https-ip": "HTTPS by IP",
    "https-name": "HTTPS by name",
}


def table_header(args: argparse.Namespace) -> None:
    header = f"{'targets':>7} {'kind':14} {'rounds':>6} {'blackbox':>9}"
    for loop in args.loops:
        header += f" {loop:>9} {'ratio':>6}"
    header += f" {'RSS MiB':>8} {'bb RSS':>7}"
    if args.check:
        header += f" {'check':>7}"
    print("CPU ms per probe (reachprobe in a running agent, per event loop), ratio to blackbox")
    print(header)
    print("-" * len(header), flush=True)


def print_size(n: int, cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> None:
    """One line per kind: each event loop's CPU per probe and its ratio to blackbox's."""
    for kind in args.kinds:
        bb = cells[(kind, "blackbox")]
        name = LABELS[kind] + (" *" if kind == "https-name" else "")
        line = f"{n:7d} {name:14} {len(bb.samples):6d} {bb.cpu_ms:9.3f}"
        for loop in args.loops:
            rp = cells[(kind, loop)]
            line += f" {rp.cpu_ms:9.3f} {rp.cpu_ms / bb.cpu_ms:6.2f}"
        rss = max(cells[(kind, loop)].rss_mib for loop in args.loops)
        line += f" {rss:8.1f} {bb.rss_mib:7.1f}"
        if args.check:
            line += f" {cells[(kind, 'check')].cpu_ms:7.3f}"
        print(line, flush=True)


NOTES = (
    "CPU: median over rounds of (CPU between cycle ends / probes); reachprobe is a running "
    "`agent run` (startup excluded),\nblackbox the exporter's /probe work; 'check' is one "
    "`check` process per cycle, startup included.\n"
    "* blackbox has no resolver setting: 'HTTPS by name' is compared with its by-IP probe.\n"
    "RSS: peak (VmHWM) of the agent; blackbox's since the exporter started."
)


def run_all(children: Children, workdir: Path, args: argparse.Namespace) -> None:
    pki, dns_port, web_port = start_servers(children, workdir, max(args.sizes))
    tcp_ports = []
    if "tcp" in args.kinds:
        tcp_ports = start_tcp_responder(children, max(args.sizes), workdir)
    box_config = workdir / "blackbox.yml"
    write_blackbox_config(box_config, pki.ca_file)
    box = start_blackbox(children, box_config, f"https://{HOST}:{web_port}/")
    servers = {
        "ca_file": pki.ca_file,
        "dns_port": dns_port,
        "web_port": web_port,
        "tcp_ports": tcp_ports,
        "blackbox": box,
    }
    table_header(args)
    for n in args.sizes:
        print_size(n, measure_size(n, children, workdir, servers, args), args)
    print(NOTES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/compare.py",
        description="CPU per probe of a running reachprobe agent and of the blackbox_exporter, "
        "for TCP, TLS and HTTPS probes of loopback targets, at 100, 1,000 and 10,000 targets.",
    )
    sizes = "100,1000,10000"
    parser.add_argument("--sizes", default=sizes, help=f"target counts, comma-separated ({sizes})")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {','.join(KINDS)} (all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (3)")
    parser.add_argument(
        "--large", type=int, default=1000, help="sizes above this run --large-rounds (1000)"
    )
    parser.add_argument("--large-rounds", type=int, default=1, help="rounds of large sizes (1)")
    parser.add_argument(
        "--cycles", type=int, default=1, help="least agent cycles (blackbox passes) per round"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="both tools' concurrency (64)")
    parser.add_argument(
        "--min-probes",
        type=int,
        default=1000,
        help="measure at least this many probes per round (more cycles for small sizes)",
    )
    parser.add_argument("--injection-window", default="500ms", help="reachprobe's (500ms)")
    parser.add_argument(
        "--check", action="store_true", help="also time a `check` process per round (with startup)"
    )
    parser.add_argument(
        "--loops",
        default="uvloop,asyncio",
        help="the agent's event loops to measure, each in every round (uvloop,asyncio); "
        "uvloop falls back to asyncio's when it is not installed",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="run in a private network namespace (root): there the ephemeral port range is "
        "widened and TIME_WAIT ports reused, which 10,000 TLS targets on one server need",
    )
    parser.add_argument("--serve-tcp", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_tcp:
        return args
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.loops = [loop for loop in args.loops.split(",") if loop]
    if set(args.loops) - {"uvloop", "asyncio"} or not args.loops:
        parser.error("--loops takes uvloop and/or asyncio")
    if unknown := set(args.kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}")
    if min(args.sizes) < 1 or args.rounds < 1 or args.cycles < 1 or args.large_rounds < 1:
        parser.error("sizes, rounds, large rounds and cycles must be at least 1")
    args.targets = ",".join(map(str, args.sizes))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_tcp:
        serve_tcp(int(args.serve_tcp[0]), Path(args.serve_tcp[1]))
        return 0
    if not os.path.exists(BLACKBOX):
        print(f"{BLACKBOX} is not installed", file=sys.stderr)
        return 2
    if args.netns and os.environ.get(INSIDE) != "1":
        _reexec_in_private_namespace()
    if args.netns:
        tune_private_namespace()
    limit = raise_fd_limit()
    print(f"{environment(args)}, cycles={args.cycles}, RLIMIT_NOFILE={limit}", flush=True)
    children = Children()
    with tempfile.TemporaryDirectory(prefix="reachprobe-compare-") as tmp:
        try:
            run_all(children, Path(tmp), args)
        finally:
            children.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
