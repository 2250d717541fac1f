"""What one QUIC step (handshake + HTTP/3 GET) costs the agent, against the TLS step.

    python bench/quic.py                 # 50 probes of each: about 10 s
    python bench/quic.py --probes 200

The servers (simlab's HTTP/3 server and its HTTPS server, with a trustme certificate) run in a
child process on 127.0.0.1, so that only the client's CPU is counted here: process CPU time
per probe (user + system) and wall time per probe, probes one after another. Nothing leaves
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from probes import quic, tls
from probes.connection import Connection
from probes.results import StepResult
from probes.tcp import run as tcp_run
from simlab.certs import Pki
from simlab.net import closed_port

HOST = "127.0.0.1"
NAME = "bench.test"
TIMEOUT = 5.0


def _serve(kind: list[str], cert: Path, key: Path) -> tuple[subprocess.Popen[str], int]:
    port = closed_port(HOST)
    argv = [sys.executable, "-m", "simlab", *kind, "--listen", f"{HOST}:{port}"]
    proc = subprocess.Popen(
        [*argv, "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready ...": bounded by the child's start
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, port


async def _measure(probes: int, probe: Callable[[], Awaitable[StepResult]]) -> tuple[float, float]:
    """Median wall ms and mean CPU ms per probe (after one warm-up probe)."""
    assert (await probe()).ok
    walls = []
    cpu_start = time.process_time()
    for _ in range(probes):
        start = time.perf_counter()
        result = await asyncio.wait_for(probe(), TIMEOUT * 2)
        walls.append(time.perf_counter() - start)
        assert result.ok, result.detail
    cpu = (time.process_time() - cpu_start) / probes
    return statistics.median(walls) * 1000, cpu * 1000


async def _tls_probe(port: int, ctx: object) -> StepResult:
    conn = Connection(HOST, port)
    try:
        connected = await tcp_run(conn, TIMEOUT)
        assert connected.ok
        return await tls.run(conn, NAME, ctx, TIMEOUT)  # type: ignore[arg-type]
    finally:
        conn.close()


async def _main(probes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="reachprobe-bench-quic-") as tmp:
        pki = Pki(Path(tmp))
        cert, key = pki.issue_files("server", NAME, HOST)
        h3, h3_port = _serve(["h3"], cert, key)
        web, web_port = _serve(["web", "--mode", "valid"], cert, key)
        try:
            trust = quic.make_trust(str(pki.ca_file))
            request = quic.QuicRequest(NAME, NAME)
            ctx = tls.make_context(str(pki.ca_file))
            # The same step trusting the lab CA alone: what loading the system store costs.
            lab_only = quic.QuicTrust(cadata=trust.cadata)

            def quic_probe(anchors: quic.QuicTrust) -> Callable[[], Awaitable[StepResult]]:
                return lambda: quic.run(HOST, h3_port, request, anchors, TIMEOUT)

            rows = [
                ("quic (handshake + HTTP/3 GET)", quic_probe(trust)),
                ("quic, lab CA only (no system)", quic_probe(lab_only)),
                ("tcp + tls (handshake only)", lambda: _tls_probe(web_port, ctx)),
            ]
            print(f"{probes} probes each, one after another, client process only")
            print(f"{'step':32} {'wall ms (median)':>17} {'CPU ms/probe':>13}")
            for name, probe in rows:
                wall, cpu = await _measure(probes, probe)
                print(f"{name:32} {wall:17.2f} {cpu:13.2f}")
        finally:
            for proc in (h3, web):
                proc.terminate()
                proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=50)
    asyncio.run(_main(parser.parse_args().probes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
