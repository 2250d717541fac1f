"""Run the censorship lab by hand (as root).

    python -m tests.lab up [--scenario NAME ...] [--port 19090] [--minutes 30]
    python -m tests.lab scenarios
    python -m tests.lab down

`up` builds the lab, applies the named scenarios, forwards Prometheus to 127.0.0.1:PORT on the
host, prints what to look at, and keeps everything running until Ctrl-C (or `--minutes`),
then tears it all down. `down` removes what a killed run left behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from tests.lab import netns, world
from tests.lab.censor import SCENARIOS
from tests.lab.observe import instance
from tests.lab.prometheus import Forwarder
from tests.lab.topology import DEFAULT_PREFIX, Lab


def _up(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix)
    lab.keep_workdir = True
    print(f"building the lab (logs and configs in {lab.workdir}) ...", flush=True)
    lab.start()
    forwarder = None
    try:
        for name in args.scenario:
            lab.censor.apply(SCENARIOS[name])
            print(f"applied {name}: {SCENARIOS[name].description}")
        forwarder = Forwarder(lab.prometheus.ns, lab.prometheus.address, args.port)
        cen, ctl = instance(lab.censored), instance(lab.control)
        print(
            f"""
Prometheus:     http://127.0.0.1:{forwarder.port}/  (forwarded into {lab.prometheus.ns})
Agents:         censored {cen} in {lab.censored.ns}, control {ctl} in {lab.control.ns}
Agent configs:  {lab.censored.config_file}  {lab.control.config_file}
Try:            reachprobe:target_blocked_at_vantage == 1
                reachprobe:target_dominant_failure:5m
                reachprobe_target_verdict == 1
One-shot check: ip netns exec {lab.censored.ns} {sys.executable} -m agent check \\
                    --config {lab.censored.config_file} --format json
Censor rules:   ip netns exec {lab.ns(world.CENSOR)} nft list ruleset
Stop:           Ctrl-C (stops by itself after {args.minutes:g} minutes)""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(1)
            for agent in lab.agents.values():
                agent.process.check_running()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        if forwarder:
            forwarder.close()
        lab.stop()
        print(f"lab stopped, namespaces {args.prefix}* removed; logs kept in {lab.workdir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    lock = netns.LabLock()
    lock.acquire(timeout=5)
    try:
        stale = netns.namespaces(args.prefix)
        for name in stale:
            netns.destroy(name)
        print(f"removed {len(stale)} namespaces" if stale else "nothing to remove")
    finally:
        lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="namespace name prefix")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the lab and keep it running")
    up.add_argument("--scenario", action="append", default=[], choices=sorted(SCENARIOS))
    up.add_argument("--port", type=int, default=19090, help="host loopback port for Prometheus")
    up.add_argument("--minutes", type=float, default=30.0, help="stop after this long")
    sub.add_parser("down", help="remove what a killed lab left behind")
    sub.add_parser("scenarios", help="list the scenarios")
    args = parser.parse_args(argv)
    reason = netns.missing_requirements()
    if args.command == "scenarios":
        for name, scenario in SCENARIOS.items():
            print(f"{name:14} {scenario.description}")
        return 0
    if reason:
        print(f"cannot run the lab: {reason}", file=sys.stderr)
        return 2
    return _up(args) if args.command == "up" else _down(args)


if __name__ == "__main__":
    sys.exit(main())
