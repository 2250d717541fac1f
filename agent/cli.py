"""The `reachprobe` command: run, check, validate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent import __version__
from agent.chain import Prober, TargetReport
from agent.config import DEFAULT_LISTEN, Config, ConfigError, load_config
from agent.metrics import Metrics
from agent.output import to_json, to_table
from agent.scheduler import Scheduler, run_cycle
from agent.server import make_app, start_server
from agent.verdict import REACHABLE
from agent.webconfig import WebConfig, listen_policy

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("reachprobe")

NOTICE = (
    "reachprobe sends ordinary DNS queries, TCP connections, TLS handshakes and HTTP requests "
    "to the %d configured targets every %gs. Anyone watching this network (your ISP, the "
    "censor) can see those connections; in some countries testing blocked sites carries risk. "
    "See the README's 'Risks' section."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reachprobe",
        description="Reachability probe agent for censorship measurement: probes targets "
        "step by step (DNS, TCP, TLS, HTTP), names how each step failed, and exports "
        "Prometheus metrics.",
        epilog="Exit codes: 0 success, 1 a target was not reachable (check), 2 bad usage "
        "or bad config.",
    )
    parser.add_argument("--version", action="version", version=f"reachprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            "-c",
            type=Path,
            metavar="FILE",
            help="YAML config file (default: the built-in config shipped with the agent)",
        )
        return p

    run = add("run", f"run the agent: probe every interval and serve /metrics "
              f"(default {DEFAULT_LISTEN})")  # fmt: skip
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = add("check", "probe every target once, print the results, exit")
    check.add_argument(
        "--target", "-t", action="extend", nargs="+", metavar="NAME",
        help="only these targets (names; the flag may also be repeated)",
    )  # fmt: skip
    check.add_argument("--format", "-f", choices=["table", "json"], default="table")
    add("validate", "check a config file and exit")
    return parser


def _load(path: Path | None, serving: bool) -> tuple[Config, WebConfig | None] | None:
    """The config and, for the commands that serve (run, validate), its web config."""
    try:
        config = load_config(path)
        source = str(path or "built-in default config")
        return config, listen_policy(config.agent, source) if serving else None
    except ConfigError as exc:
        print(f"reachprobe: invalid config\n{exc}", file=sys.stderr)
        return None


def _progress(total: int) -> Callable[[TargetReport], None]:
    """A one-line progress display on the terminal for `check`."""
    done = 0

    def show(report: TargetReport) -> None:
        nonlocal done
        done += 1
        line = f"[{done}/{total}] {report.target.name}: {report.verdict}"
        print(f"\r\033[K{line[:100]}", end="", file=sys.stderr, flush=True)

    return show


async def _check(config: Config, names: Sequence[str] | None, fmt: str) -> int:
    targets = config.targets
    if names:
        unknown = sorted(set(names) - {t.name for t in targets})
        if unknown:
            print(f"reachprobe: no target named {', '.join(unknown)}", file=sys.stderr)
            return EXIT_USAGE
        targets = [t for t in targets if t.name in names]
    prober = Prober(config)
    progress = _progress(len(targets)) if sys.stderr.isatty() else None
    try:
        reports = await run_cycle(prober, targets, on_report=progress)
    finally:
        await prober.aclose()
    if progress is not None:
        print(file=sys.stderr)
    print(to_json(config, reports) if fmt == "json" else to_table(reports))
    return EXIT_OK if all(r.verdict == REACHABLE for r in reports) else EXIT_UNREACHABLE


async def _run(config: Config, path: Path | None, web_config: WebConfig | None) -> int:
    metrics = Metrics()
    scheduler = Scheduler(config, metrics, path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.stop)
    loop.add_signal_handler(signal.SIGHUP, scheduler.request_reload)
    runner = None
    if config.agent.listen_address is not None:
        host, port = config.agent.listen_address
        try:
            app = make_app(metrics, scheduler, web_config)
            runner = await start_server(app, host, port, web_config)
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.agent.listen, exc.strerror or exc)
            return EXIT_USAGE
        scheme = "https" if web_config and web_config.tls_server_config else "http"
        log.info("serving /metrics and /healthz on %s://%s/", scheme, config.agent.listen)
    log.warning(NOTICE, len(config.targets), config.agent.interval)
    try:
        await scheduler.run()
    finally:
        if runner is not None:
            await runner.cleanup()
    log.info("stopped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `reachprobe` console script."""
    args = _parser().parse_args(argv)
    loaded = _load(args.config, serving=args.command != "check")
    if loaded is None:
        return EXIT_USAGE
    config, web_config = loaded
    if args.command == "validate":
        source = args.config or "built-in default config"
        print(f"{source}: ok ({len(config.targets)} targets)")
        return EXIT_OK
    if args.command == "check":
        return asyncio.run(_check(config, args.target, args.format))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_run(config, args.config, web_config))
