"""Benchmark: how many Prometheus series one agent exports, in all and per target.

Runs the real agent (`python -m agent run`) against the loopback lab (simlab, 127.0.0.1 only)
with no target, then 1 and N targets of one kind, waits for its first cycle, reads /metrics
and counts the series (one per sample line, as Prometheus stores them). Per target is the
difference between N and 1 target over N-1; what is left (the step histograms, agent series)
is per agent. Kinds: HTTPS URL targets that work, HTTPS URL targets that fail at TLS
(another result code, so more `probe_results_total` series), and `tcp:` targets (one step).

A pushing agent (remote_write) sends the same series plus its own four remote-write series
(five samples: the dropped counter has two reasons). Run: `python bench/series.py [-n N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from simlab.loopback import HOST, LoopbackLab

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_CYCLE_TIMEOUT = 60.0


def count_series(text: str) -> int:
    """Sample lines of a Prometheus text exposition."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def last_cycle(text: str) -> float:
    """The agent's reachprobe_last_cycle_timestamp_seconds (0 before its first cycle)."""
    for line in text.splitlines():
        if line.startswith("reachprobe_last_cycle_timestamp_seconds "):
            return float(line.split()[1])
    return 0.0


async def series_after_first_cycle(lab: LoopbackLab, directory: Path, targets: list[dict]) -> int:
    """Start an agent on `targets`, wait for its first full cycle, return its series count."""
    config = lab.write_config(directory / f"agent-{len(targets)}.yaml", targets)
    listen = yaml.safe_load(config.read_text())["agent"]["listen"]
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--config",
        str(config),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + FIRST_CYCLE_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"http://{listen}/metrics") as response:
                        text = await response.text()
                    if last_cycle(text) > 0:
                        return count_series(text)
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("the agent did not finish a cycle in time")
    finally:
        agent.terminate()
        await asyncio.wait_for(agent.wait(), 10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="targets per kind (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        lab = await LoopbackLab(directory).start()
        try:
            kinds = {
                "https URL, works": lambda i: {
                    "name": f"ok-{i}",
                    "url": lab.url("https", "valid.test"),
                },
                "https URL, fails at TLS": lambda i: {
                    "name": f"bad-{i}",
                    "url": lab.url("untrusted", "untrusted.test"),
                },
                "tcp: ip:port, works": lambda i: {
                    "name": f"tcp-{i}",
                    "tcp": f"{HOST}:{lab.port('https')}",
                },
            }
            base = await series_after_first_cycle(lab, directory, [])
            print(f"agent with no target: {base} series")
            for kind, make in kinds.items():
                one = await series_after_first_cycle(lab, directory, [make(0)])
                many = await series_after_first_cycle(
                    lab, directory, [make(i) for i in range(args.n)]
                )
                per_target = (many - one) / (args.n - 1)
                print(
                    f"{kind}: 1 target {one} series, {args.n} targets {many} series: "
                    f"{per_target:.1f} per target, {one - per_target:.0f} per agent"
                )
        finally:
            await lab.close()


if __name__ == "__main__":
    asyncio.run(main())
