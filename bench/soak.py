"""Soak: `reachprobe run` for a bounded time against loopback servers whose faults switch on and
off, printing the agent's RSS, open FDs, threads and cycle lateness at start and end.

Everything is on 127.0.0.1 (simlab servers in this process; the agent is a subprocess with an
explicit config whose resolvers are those servers). Targets cover every outcome: reachable,
blockpage, reset, slowloris body, endless redirect, a TLS peer that stalls after its
ServerHello, a blackholed port, NXDOMAIN and a bogon answer. Every `--switch` seconds the next
scenario toggles: the test resolver dies (or comes back), the web server dies (or comes back),
the control resolver dies (or comes back).

    python bench/soak.py                 # 10 minutes
    python bench/soak.py --minutes 4 --targets 150 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from simlab import (
    Blackhole,
    DnsServer,
    DohServer,
    HttpServer,
    Pki,
    RawServer,
    Zone,
    closed_port,
    server_context,
    start_raw,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
KINDS = ("valid", "blockpage", "reset", "trickle", "loop", "stall", "blackhole", "nx", "bogon")


@dataclass
class Figures:
    """One look at the agent: /proc figures and what its metrics say about cycles."""

    at: float
    rss_kib: int
    fds: int
    threads: int
    cycles: float
    cycle_seconds_sum: float
    last_cycle: float


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


async def look(pid: int, metrics_url: str) -> Figures:
    """Read the agent's RSS, FDs and threads from /proc and its cycle metrics from /metrics."""
    status = proc_status(pid)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(metrics_url) as response,
    ):
        text = await response.text()
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }
    return Figures(
        at=time.time(),
        rss_kib=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        cycles=samples.get("reachprobe_cycle_duration_seconds_count", 0.0),
        cycle_seconds_sum=samples.get("reachprobe_cycle_duration_seconds_sum", 0.0),
        last_cycle=samples.get("reachprobe_last_cycle_timestamp_seconds", 0.0),
    )


class Servers:
    """The loopback servers, and the scenarios that take some of them down and back up."""

    def __init__(self, directory: Path) -> None:
        self.pki = Pki(directory)
        self.ctx = server_context(self.pki.issue(*(f"{k}.soak.test" for k in KINDS), HOST))
        self.zone = Zone(
            {
                **{f"{k}.soak.test": [HOST] for k in KINDS if k not in ("nx", "bogon")},
                "bogon.soak.test": ["10.255.255.1"],
            }
        )
        self.web: dict[str, HttpServer | RawServer] = {}
        self.hole = Blackhole(HOST)
        self.down: set[str] = set()

    async def start(self) -> Servers:
        self.dns = await DnsServer(self.zone, HOST).start()
        self.doh = await DohServer(self.zone, self.ctx, HOST).start()
        self.web["valid"] = await HttpServer("valid", HOST, ssl_context=self.ctx).start()
        self.web["blockpage"] = await HttpServer("blockpage", HOST).start()
        self.web["trickle"] = await HttpServer("trickle", HOST).start()
        self.web["loop"] = await HttpServer("redirect", HOST, location="/loop").start()
        self.web["reset"] = await start_raw("reset", HOST)
        self.web["stall"] = await start_raw("hello-stall", HOST)
        return self

    def url(self, kind: str) -> str:
        name = f"{kind}.soak.test"
        if kind == "blackhole":
            return f"https://{name}:{self.hole.port}/"
        server = self.web.get(kind, self.web["valid"])
        plain = isinstance(server, HttpServer) and server.ssl_context is None
        return f"{'http' if plain else 'https'}://{name}:{server.port}/"

    async def toggle(self, scenario: str) -> str:
        """Take the scenario's server down, or bring it back on the same port."""
        going_down = scenario not in self.down
        if scenario == "test-resolver":
            if going_down:
                await self.dns.close()
            else:
                self.dns = await DnsServer(self.zone, HOST, self.dns.port).start()
        elif scenario == "web":
            old = self.web["valid"]
            if going_down:
                await old.close()
            else:
                self.web["valid"] = await HttpServer("valid", HOST, old.port, self.ctx).start()
        elif scenario == "control-resolver":
            if going_down:
                await self.doh.close()
            else:
                self.doh = await DohServer(self.zone, self.ctx, HOST, self.doh.port).start()
        if going_down:
            self.down.add(scenario)
        else:
            self.down.discard(scenario)
        return f"{scenario} {'down' if going_down else 'back up'}"

    async def close(self) -> None:
        for server in (self.dns, self.doh, *self.web.values()):
            await server.close()
        self.hole.close()


SCENARIOS = ("test-resolver", "web", "control-resolver")


def agent_config(servers: Servers, args: argparse.Namespace, port: int) -> dict[str, Any]:
    targets = [
        {"name": f"{KINDS[i % len(KINDS)]}-{i}", "url": servers.url(KINDS[i % len(KINDS)])}
        for i in range(args.targets)
    ]
    return {
        "agent": {
            "vantage": "soak",
            "listen": f"{HOST}:{port}",
            "interval": f"{args.interval}s",
            "timeout": f"{args.timeout}s",
            "concurrency": args.concurrency,
        },
        "resolvers": {
            "test": {"type": "udp", "servers": [f"{HOST}:{servers.dns.port}"]},
            "control": {"type": "doh", "url": servers.doh.url},
            "bogon_exempt": ["127.0.0.0/8"],
            "injection_window": "100ms",
        },
        "tls": {"ca_file": str(servers.pki.ca_file)},
        "targets": targets,
    }


async def until_ready(
    probe: Callable[[], Awaitable[Figures]], proc: asyncio.subprocess.Process
) -> Figures:
    """The first look after the first finished cycle."""
    end = time.monotonic() + READY_TIMEOUT + 3 * 60
    while time.monotonic() < end:
        if proc.returncode is not None:
            raise SystemExit(f"soak: the agent exited with {proc.returncode}")
        try:
            figures = await probe()
            if figures.cycles >= 1:
                return figures
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("soak: no cycle finished in time")


def line(label: str, f: Figures, interval: float) -> str:
    age = f.at - f.last_cycle
    return (
        f"{label:>6}  rss {f.rss_kib / 1024:7.1f} MiB  fds {f.fds:4d}  threads {f.threads:3d}  "
        f"cycles {f.cycles:5.0f}  last cycle {age:5.1f}s ago (interval {interval:g}s)"
    )


@dataclass
class Peak:
    """The highest figures seen during the soak."""

    rss_kib: int = 0
    fds: int = 0
    threads: int = 0
    cycle_age: float = 0.0

    def update(self, f: Figures) -> None:
        self.rss_kib = max(self.rss_kib, f.rss_kib)
        self.fds = max(self.fds, f.fds)
        self.threads = max(self.threads, f.threads)
        self.cycle_age = max(self.cycle_age, f.at - f.last_cycle)


def summary(start: Figures, end: Figures, interval: float, peak: Peak) -> str:
    elapsed = end.at - start.at
    cycles = end.cycles - start.cycles
    mean = (end.cycle_seconds_sum - start.cycle_seconds_sum) / cycles if cycles else float("nan")
    expected = elapsed / interval
    return "\n".join(
        [
            f"window   {elapsed / 60:.1f} min, {cycles:.0f} cycles finished "
            f"(one per interval would be {expected:.1f})",
            f"cycles   mean duration {mean:.2f}s; lateness (mean duration beyond the interval) "
            f"{max(0.0, mean - interval):.2f}s; longest wait for a cycle end "
            f"{peak.cycle_age:.1f}s",
            f"rss      {start.rss_kib / 1024:.1f} -> {end.rss_kib / 1024:.1f} MiB "
            f"({(end.rss_kib - start.rss_kib) / 1024:+.1f}), peak {peak.rss_kib / 1024:.1f} MiB",
            f"fds      {start.fds} -> {end.fds} ({end.fds - start.fds:+d}), peak {peak.fds}",
            f"threads  {start.threads} -> {end.threads} ({end.threads - start.threads:+d}), "
            f"peak {peak.threads}",
        ]
    )


async def soak(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="reachprobe-soak-") as tmp:
        workdir = Path(tmp)
        servers = await Servers(workdir).start()
        port = closed_port(HOST)
        config = workdir / "agent.yaml"
        config.write_text(yaml.safe_dump(agent_config(servers, args, port)))
        log = (workdir / "agent.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--config", str(config),
            cwd=REPO_ROOT, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        metrics_url = f"http://{HOST}:{port}/metrics"

        async def probe() -> Figures:
            return await look(proc.pid, metrics_url)

        try:
            print(
                f"soak: {args.targets} targets ({', '.join(KINDS)}), interval {args.interval}s, "
                f"timeout {args.timeout}s, concurrency {args.concurrency}, {args.minutes} min; "
                f"a scenario toggles every {args.switch}s; python {platform.python_version()}, "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            start = await until_ready(probe, proc)
            print(line("start", start, args.interval), flush=True)
            peak = Peak()
            peak.update(start)
            deadline = time.monotonic() + args.minutes * 60
            next_switch = time.monotonic() + args.switch
            next_report = time.monotonic() + args.report_every
            turn = 0
            while time.monotonic() < deadline:
                if proc.returncode is not None:
                    raise SystemExit(f"soak: the agent exited with {proc.returncode}")
                await asyncio.sleep(1)
                now_figures = await probe()
                peak.update(now_figures)
                if time.monotonic() >= next_switch and next_switch < deadline - args.switch / 2:
                    what = await servers.toggle(SCENARIOS[turn % len(SCENARIOS)])
                    minute = (now_figures.at - start.at) / 60
                    print(f"        [{minute:4.1f} min] {what}", flush=True)
                    turn += 1
                    next_switch += args.switch
                if time.monotonic() >= next_report:
                    print(line("now", now_figures, args.interval), flush=True)
                    next_report += args.report_every
            for scenario in list(servers.down):  # end with every server up, as it began
                await servers.toggle(scenario)
            end = await probe()
            peak.update(end)
            print(line("end", end, args.interval))
            print(summary(start, end, args.interval, peak))
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
            await servers.close()
        print(f"agent exit code after SIGTERM: {proc.returncode}")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to soak (default 10)")
    parser.add_argument("--targets", type=int, default=180)
    parser.add_argument("--interval", type=float, default=10.0, help="agent interval, seconds")
    parser.add_argument("--timeout", type=float, default=2.0, help="agent timeout, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--switch", type=float, default=30.0, help="seconds between toggles")
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds between lines")
    args = parser.parse_args()
    if args.minutes <= 0 or args.targets < 1:
        parser.error("--minutes must be positive and --targets at least 1")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
