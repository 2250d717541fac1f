"""`python -m probes.raw`: run one raw probe and print its result as JSON.

For operators checking a single target by hand, and for the lab, which runs it inside a
network namespace. Every address is given on the command line; nothing is contacted otherwise.

    python -m probes.raw trace 198.18.100.10 443 --method tls --sni blocked.raw.test
    python -m probes.raw reset 198.18.100.10 443 [--sni NAME | --host NAME]
    python -m probes.raw dns 198.18.100.53 blocked.raw.test --reference-name innocent.raw.test
    python -m probes.raw echo 198.18.100.10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from probes.browser import CONTROL_NAME
from probes.dns import INJECTION_WINDOW
from probes.raw import packets
from probes.raw.echo import echo
from probes.raw.fingerprint import fingerprint_dns, fingerprint_reset
from probes.raw.followup import RawOptions, RawProber
from probes.raw.options import DEFAULT_MAX_TTL
from probes.raw.ratelimit import DEFAULT_GLOBAL_RATE, DEFAULT_TARGET_RATE, RateLimits


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m probes.raw", description=__doc__.split("\n")[0])
    top.add_argument("--rate", type=float, default=DEFAULT_TARGET_RATE, help="probes/s per target")
    top.add_argument("--global-rate", type=float, default=DEFAULT_GLOBAL_RATE, help="probes/s")
    top.add_argument("--timeout", type=float, default=2.0, help="seconds per probe")
    sub = top.add_subparsers(dest="command", required=True)

    t = sub.add_parser("trace", help="find the blocking hop")
    t.add_argument("address")
    t.add_argument("port", type=int)
    t.add_argument("--method", choices=("syn", "tls", "http"), default="syn")
    t.add_argument("--sni")
    t.add_argument("--host")
    t.add_argument("--control-sni", default=CONTROL_NAME)
    t.add_argument("--control-host", default=CONTROL_NAME)
    t.add_argument("--max-ttl", type=int, default=DEFAULT_MAX_TTL)
    t.add_argument("--repeats", type=int, default=3)

    r = sub.add_parser("reset", help="was the RST forged? (with --sni/--host: after that trigger)")
    r.add_argument("address")
    r.add_argument("port", type=int)
    trigger = r.add_mutually_exclusive_group()
    trigger.add_argument("--sni", help="send a ClientHello with this SNI after the handshake")
    trigger.add_argument("--host", help="send an HTTP request with this Host after the handshake")
    r.add_argument("--reference-port", type=int, action="append", dest="reference_ports")

    d = sub.add_parser("dns", help="were competing DNS answers forged?")
    d.add_argument("resolver")
    d.add_argument("name")
    d.add_argument("--reference-name", required=True)
    d.add_argument("--port", type=int, default=53)
    d.add_argument("--window", type=float, default=INJECTION_WINDOW)

    e = sub.add_parser("echo", help="ICMP echo")
    e.add_argument("address")
    e.add_argument("--count", type=int, default=3)
    return top


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the probe `args` ask for; its result's JSON."""
    limits = RateLimits(global_rate=args.global_rate, target_rate=args.rate)
    if args.command == "trace":
        options = RawOptions(
            rate_per_second=args.rate,
            global_rate_per_second=args.global_rate,
            max_ttl=args.max_ttl,
            repeats=args.repeats,
            timeout=args.timeout,
            control_sni=args.control_sni,
            control_host=args.control_host,
        )
        prober = RawProber(options)
        result = await prober.trace(
            args.address, args.port, args.method, sni=args.sni, host=args.host
        )
    elif args.command == "reset":
        payload = None
        if args.sni:
            payload = packets.client_hello(args.sni)
        elif args.host:
            payload = packets.http_request(args.host)
        result = await fingerprint_reset(
            args.address,
            args.port,
            trigger=payload,
            reference_ports=args.reference_ports or (443, 80),
            timeout=args.timeout,
            limits=limits,
        )
    elif args.command == "dns":
        result = await fingerprint_dns(
            args.resolver,
            args.name,
            reference_name=args.reference_name,
            port=args.port,
            window=args.window,
            timeout=args.timeout,
            limits=limits,
        )
    else:
        result = await echo(args.address, count=args.count, timeout=args.timeout, limits=limits)
    return result.to_json()


def main(argv: Sequence[str] | None = None) -> int:
    """Print one probe's JSON; 2 for bad arguments (rates must be positive)."""
    args = parser().parse_args(argv)
    if args.rate <= 0 or args.global_rate <= 0:
        print("--rate and --global-rate must be positive", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
