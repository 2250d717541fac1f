"""Benchmark: CPU, memory and wall time per probe of reachprobe vs. prometheus-blackbox-exporter.

Everything runs on loopback (127.0.0.0/8): one HTTPS server and one DNS server from
`simlab` (each in its own process, so that their CPU is charged to neither tool), then

1. reachprobe `check --format json` over N URL targets by name (DNS + TCP + TLS + HTTP),
2. reachprobe over the same N URLs with the IP literal as host (TCP + TLS + HTTP, no DNS),
3. reachprobe over one target (the fixed cost of a `check` process: interpreter, imports,
   config), so that the per-probe cost of a long-running agent can be told apart,
4. prometheus-blackbox-exporter answering N `/probe` requests for the same IP-literal URLs
   (TCP + TLS + HTTP), `concurrency` requests in flight.

Each is repeated R rounds. Run from anywhere: `python bench/cycle.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from simlab.certs import Pki
from simlab.net import closed_port

REPO_ROOT = Path(__file__).resolve().parents[1]

HOST = "127.0.0.1"
DOMAIN = "bench.test"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
MODULE = "https_2xx"
# Bounds on every child and request loop, so that a hung tool cannot hang the benchmark.
RUN_TIMEOUT = 90.0
READY_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One measured cycle: wall seconds, CPU seconds (user+sys) and peak RSS in KiB."""

    wall: float
    cpu: float
    maxrss_kib: int


@dataclass
class Row:
    """All rounds of one tool/variant.

    Figures are the best (minimum) of the rounds, as `timeit` reports: other load on the
    machine can only add time, so the minimum is the least disturbed estimate.
    """

    tool: str
    probes_per_cycle: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return self.probes_per_cycle * len(self.samples)

    @property
    def wall(self) -> float:
        return min(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        """CPU seconds of the best cycle."""
        return min(s.cpu for s in self.samples)

    @property
    def cpu_per_probe_ms(self) -> float:
        return 1000 * self.cpu / self.probes_per_cycle

    @property
    def cpu_spread(self) -> str:
        """The rounds' CPU seconds per cycle, min-max, to show how noisy the machine was."""
        cpus = [s.cpu for s in self.samples]
        return f"{min(cpus):.2f}-{max(cpus):.2f}"

    @property
    def peak_rss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024


# --- child processes ---------------------------------------------------------------------------


class Children:
    """Every long-running process the benchmark starts, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], ready: re.Pattern[str] | None) -> tuple[subprocess.Popen, str]:
        """Start `argv`; with `ready`, wait for a stdout line matching it and return that line."""
        # Only a server announcing readiness gets a pipe: nothing else reads it, and a full
        # pipe would block its writer.
        stdout = subprocess.PIPE if ready is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=stdout, stderr=subprocess.DEVNULL, text=True
        )
        self.procs.append(proc)
        if ready is None:
            return proc, ""
        line = _readline(proc, READY_TIMEOUT)
        if not ready.search(line):
            raise RuntimeError(f"{argv[:4]} did not get ready: {line!r}")
        return proc, line.strip()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line of `proc`, or "" after `timeout` seconds (the reader thread is a daemon)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


def run_measured(argv: list[str], stdout_path: Path, timeout: float) -> tuple[int, Sample]:
    """Run `argv` to completion and return its exit status and its own rusage.

    `os.wait4` gives the rusage of exactly this child (user+sys time and ru_maxrss, KiB on
    Linux), which `RUSAGE_CHILDREN` deltas cannot do for the peak RSS. Output goes to files,
    not pipes, so that a chatty child can never block on a full pipe while we wait for it.
    """
    stderr_path = stdout_path.with_suffix(".stderr")
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=err)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        reaped = False
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            reaped = True
        finally:
            watchdog.cancel()
            if not reaped:  # interrupted: never leave the child behind
                proc.kill()
                proc.wait(timeout=5)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        stderr = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv} exited {proc.returncode}: {stderr}")
    return proc.returncode, Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds `pid` has used so far (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_kib(pid: int) -> int:
    """The peak resident set size of `pid` (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


# --- the setup ---------------------------------------------------------------------------------


def target_name(i: int) -> str:
    return f"t{i:04d}.{DOMAIN}"


def agent_config(
    ca_file: Path, dns_port: int, targets: list[dict], args: argparse.Namespace, **agent: object
) -> dict:
    """A reachprobe config probing `targets` through the loopback DNS server; `agent` keys
    override the agent section (by default it serves nothing)."""
    return {
        "agent": {
            "vantage": "bench",
            "role": "test",
            "listen": None,
            "timeout": "5s",
            "concurrency": args.concurrency,
            **agent,
        },
        "resolvers": {
            "test": {"type": "udp", "servers": [f"{HOST}:{dns_port}"]},
            "bogon_exempt": ["127.0.0.0/8"],
            "injection_window": args.injection_window,
        },
        "tls": {"ca_file": str(ca_file)},
        "targets": targets,
    }


def write_agent_config(
    path: Path,
    ca_file: Path,
    dns_port: int,
    urls: list[str],
    args: argparse.Namespace,
    blockpages: list[dict] | None = None,
) -> None:
    """A `check` config probing `urls` through the loopback DNS server, serving nothing, with
    `blockpages` as the config's own fingerprints."""
    targets = [
        {"name": f"t{i:04d}", "url": url, "expect_status": [200]} for i, url in enumerate(urls)
    ]
    config = agent_config(ca_file, dns_port, targets, args)
    if blockpages:
        config["blockpages"] = blockpages
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def fingerprint_entries(csv_path: Path) -> list[dict]:
    """OONI's HTTP fingerprints (fingerprints_http.csv) as config `blockpages` entries; names
    that are no valid label (OONI has one with a U+FFFD in it) are numbered instead."""
    from agent.fingerprint_db import read_ooni_http

    entries = []
    for i, fp in enumerate(read_ooni_http(csv_path)):
        entry = {k: v for k, v in dataclasses.asdict(fp).items() if v not in (None, False)}
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", fp.name):
            entry["name"] = f"fingerprint-{i}"
        entries.append(entry)
    return entries


def write_blackbox_config(path: Path, ca_file: Path) -> None:
    """The modules the benchmarks use, trusting the test CA, IPv4 only (targets are IP
    literals): `https_2xx` (an `http_2xx`-style GET), `tcp_connect`, and `tls_connect` (a
    TCP connect and a TLS handshake, the certificate validated)."""
    tls_config = {"ca_file": str(ca_file)}
    tcp = {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}
    config = {
        "modules": {
            MODULE: {
                "prober": "http",
                "timeout": "5s",
                "http": {
                    "valid_status_codes": [200],
                    "method": "GET",
                    **tcp,
                    "fail_if_not_ssl": True,
                    "tls_config": tls_config,
                },
            },
            "tcp_connect": {"prober": "tcp", "timeout": "5s", "tcp": tcp},
            "tls_connect": {
                "prober": "tcp",
                "timeout": "5s",
                "tcp": {**tcp, "tls": True, "tls_config": tls_config},
            },
        }
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def check_reachable(output: Path, expected: int) -> None:
    """Fail unless the `check --format json` output has `expected` targets, all reachable."""
    targets = json.loads(output.read_text())["targets"]
    bad = [(t["name"], t["verdict"]) for t in targets if t["verdict"] != "reachable"]
    if len(targets) != expected or bad:
        raise RuntimeError(f"{len(targets)}/{expected} targets, not reachable: {bad[:5]}")


def reachprobe_cycle(config: Path, probes: int, workdir: Path) -> Sample:
    """One `check --format json` process over `config`; every target must be reachable."""
    argv = [sys.executable, "-m", "agent", "check", "--config", str(config), "--format", "json"]
    output = workdir / "check.json"
    code, sample = run_measured(argv, output, RUN_TIMEOUT)
    check_reachable(output, probes)
    if code != 0:
        raise RuntimeError(f"check exited {code} although every target was reachable")
    return sample


async def _blackbox_round(
    port: int, urls: list[str], concurrency: int, module: str = MODULE
) -> None:
    """Send one `/probe` per URL, `concurrency` at a time; fail unless each says success."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    timeout = aiohttp.ClientTimeout(total=30)
    # Keep-alive to the exporter, as Prometheus does; each probe still dials its target anew.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str) -> None:
            async with gate:
                params = {"target": url, "module": module}
                async with session.get(f"http://{HOST}:{port}/probe", params=params) as resp:
                    text = await resp.text()
            if resp.status != 200 or not re.search(r"^probe_success 1$", text, re.M):
                failures.append(url)

        async with asyncio.timeout(RUN_TIMEOUT):
            await asyncio.gather(*(one(u) for u in urls))
    if failures:
        raise RuntimeError(f"blackbox: {len(failures)} probes failed, e.g. {failures[0]}")


def start_blackbox(children: Children, config: Path, warmup_url: str) -> tuple[int, int]:
    """Start the exporter on a free loopback port and probe once; return (pid, port)."""
    port = closed_port(HOST)
    argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address={HOST}:{port}"]
    proc, _ = children.start(argv, None)
    _wait_http(f"http://{HOST}:{port}/-/healthy", proc)
    # One probe first, so that the rounds measure a warm exporter, like a long-running agent.
    asyncio.run(_blackbox_round(port, [warmup_url], 1))
    return proc.pid, port


def blackbox_cycle(
    pid: int, port: int, urls: list[str], concurrency: int, module: str = MODULE
) -> Sample:
    """One `/probe` per URL; the exporter's CPU from /proc before and after."""
    cpu0, start = proc_cpu(pid), time.perf_counter()
    asyncio.run(_blackbox_round(port, urls, concurrency, module))
    wall, cpu = time.perf_counter() - start, proc_cpu(pid) - cpu0
    return Sample(wall, cpu, proc_peak_rss_kib(pid))


def _wait_http(url: str, proc: subprocess.Popen) -> None:
    async def poll() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(int(READY_TIMEOUT / 0.1)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{url} never answered")

    asyncio.run(poll())


# --- report ------------------------------------------------------------------------------------


def print_report(rows: list[Row], fixed: Row, fixed_db: Row | None = None) -> None:
    """The table, the reachprobe/blackbox ratios and the fixed cost of a `check` process
    (`fixed_db`: that of one with the fingerprint database, for the rows that load it)."""
    header = (
        f"{'tool':38} {'probes':>7} {'wall s/cycle':>13} {'CPU ms/probe':>13} "
        f"{'excl. startup':>14} {'peak RSS MiB':>13} {'CPU s/cycle':>12}"
    )
    print(header)
    print("-" * len(header))
    # What a long-running agent pays per probe. A `check` process pays the interpreter, the
    # imports and the config once per cycle, which `reachprobe run` pays once: subtract the
    # one-target run (a linear model: fixed + per-probe * probes).
    marginal: dict[str, float] = {}
    for row in rows:
        if row.tool.startswith("reachprobe"):
            base = fixed_db if fixed_db is not None and "fingerprints" in row.tool else fixed
            per_probe = (row.cpu - base.cpu) / (row.probes_per_cycle - 1)
            marginal[row.tool] = 1000 * per_probe
        else:
            marginal[row.tool] = row.cpu_per_probe_ms
    fixed_rows = [fixed] if fixed_db is None else [fixed, fixed_db]
    for row in [*rows, *fixed_rows]:
        excl = f"{marginal[row.tool]:14.2f}" if row not in fixed_rows else f"{'(startup)':>14}"
        print(
            f"{row.tool:38} {row.probes:7d} {row.wall:13.2f} {row.cpu_per_probe_ms:13.2f} "
            f"{excl} {row.peak_rss_mib:13.1f} {row.cpu_spread:>12}"
        )
    print()
    box = next(r for r in rows if r.tool.startswith("blackbox"))
    for row in rows:
        if row is not box:
            print(
                f"CPU per probe, {row.tool} / blackbox: "
                f"{row.cpu_per_probe_ms / box.cpu_per_probe_ms:.1f}x per `check` process, "
                f"{marginal[row.tool] / box.cpu_per_probe_ms:.1f}x excluding startup"
            )
    for row in fixed_rows:
        print(
            f"fixed cost of one `check` process ({row.tool.removeprefix('reachprobe ')}): "
            f"{1000 * row.cpu:.0f} ms CPU, {row.wall:.2f} s wall"
        )
    print(
        "wall and CPU are the best of the rounds; 'CPU s/cycle' is the rounds' min-max; "
        "RSS is the peak over all rounds"
    )


def environment(args: argparse.Namespace) -> str:
    box = subprocess.run([BLACKBOX, "--version"], capture_output=True, text=True, timeout=10)
    box_version = (box.stdout or box.stderr).splitlines()[0]
    return (
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{box_version}, {os.cpu_count()} cores ({platform.machine()}), "
        f"targets={args.targets} rounds={args.rounds} concurrency={args.concurrency} "
        f"injection_window={args.injection_window}"
    )


# --- main --------------------------------------------------------------------------------------


def start_servers(children: Children, workdir: Path, targets: int) -> tuple[Pki, int, int]:
    """Start the loopback DNS and HTTPS servers; return (pki, dns port, https port)."""
    pki = Pki(workdir / "pki")
    # One wildcard name for the by-name targets, and the IP literal for the IP-URL targets.
    cert, key = pki.issue_files("web", f"*.{DOMAIN}", HOST)
    zone = workdir / "zone.yaml"
    zone.write_text(yaml.safe_dump({target_name(i): [HOST] for i in range(targets)}))
    server = [sys.executable, "-m", "simlab"]
    dns_argv = [*server, "dns", "--listen", f"{HOST}:0", "--zone", str(zone)]
    _, dns_line = children.start(dns_argv, re.compile(r"^ready dns"))
    web_argv = [*server, "web", "--listen", f"{HOST}:0", "--mode", "valid"]
    web_argv += ["--cert", str(cert), "--key", str(key)]
    _, web_line = children.start(web_argv, re.compile(r"^ready web valid https://"))
    dns_port = int(dns_line.rsplit(":", 1)[1])
    web_port = int(web_line.rstrip("/").rsplit(":", 1)[1])
    return pki, dns_port, web_port


def run_all(children: Children, workdir: Path, args: argparse.Namespace) -> None:
    """Start the servers, measure every variant, print the report."""
    pki, dns_port, web_port = start_servers(children, workdir, args.targets)
    by_name = [f"https://{target_name(i)}:{web_port}/" for i in range(args.targets)]
    # Distinct paths, so that the IP-URL targets are distinct URLs as well as names.
    by_ip = [f"https://{HOST}:{web_port}/t{i:04d}" for i in range(args.targets)]
    configs = {"names": by_name, "ips": by_ip, "one": by_ip[:1]}
    for label, urls in configs.items():
        write_agent_config(workdir / f"{label}.yaml", pki.ca_file, dns_port, urls, args)
    extra = fingerprint_entries(args.fingerprints) if args.fingerprints else []
    if extra:
        configs["ips-db"], configs["one-db"] = by_ip, by_ip[:1]
        for label in ("ips-db", "one-db"):
            urls = configs[label]
            write_agent_config(workdir / f"{label}.yaml", pki.ca_file, dns_port, urls, args, extra)
    box_config = workdir / "blackbox.yml"
    write_blackbox_config(box_config, pki.ca_file)

    box_pid, box_port = start_blackbox(children, box_config, by_ip[0])

    rows = {
        "names": Row("reachprobe (names: DNS+TCP+TLS+HTTP)", args.targets),
        "ips": Row("reachprobe (IP URLs: TCP+TLS+HTTP)", args.targets),
        "blackbox": Row("blackbox_exporter (IP URLs)", args.targets),
        "one": Row("reachprobe (1 target)", 1),
    }
    if extra:
        rows["ips-db"] = Row(f"reachprobe (IP URLs, +{len(extra)} fingerprints)", args.targets)
        rows["one-db"] = Row(f"reachprobe (1 target, +{len(extra)} fingerprints)", 1)
    # Rounds interleave the variants, so that a burst of other load on the machine hits
    # every variant alike rather than one of them.
    for _ in range(args.rounds):
        for key, row in rows.items():
            if key == "blackbox":
                sample = blackbox_cycle(box_pid, box_port, by_ip, args.concurrency)
            else:
                sample = reachprobe_cycle(workdir / f"{key}.yaml", len(configs[key]), workdir)
            row.samples.append(sample)
    fixed, fixed_db = rows.pop("one"), rows.pop("one-db", None)
    print_report(list(rows.values()), fixed, fixed_db)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/cycle.py",
        description="Compare reachprobe's CPU, memory and wall time per probe with "
        "prometheus-blackbox-exporter's, against loopback HTTPS and DNS servers.",
    )
    parser.add_argument("--targets", type=int, default=200, help="probes per cycle (200)")
    parser.add_argument("--rounds", type=int, default=5, help="cycles per tool (5)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="reachprobe's agent.concurrency and blackbox requests in flight (64)",
    )
    parser.add_argument(
        "--injection-window",
        default="500ms",
        help="reachprobe's resolvers.injection_window (500ms, the agent's default)",
    )
    parser.add_argument(
        "--fingerprints",
        type=Path,
        help="OONI's fingerprints_http.csv: adds a row probing the IP URLs with all of its "
        "fingerprints loaded, beside the row with the shipped ones only",
    )
    args = parser.parse_args(argv)
    if args.targets < 2 or args.rounds < 1 or args.concurrency < 1:
        parser.error("need --targets >= 2, --rounds >= 1, --concurrency >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which(BLACKBOX):
        print(f"{BLACKBOX} is not installed", file=sys.stderr)
        return 2
    print(environment(args), flush=True)
    children = Children()
    with tempfile.TemporaryDirectory(prefix="reachprobe-bench-") as tmp:
        try:
            run_all(children, Path(tmp), args)
        finally:
            # Inside the `with`, so that the servers stop before their files are removed.
            children.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
