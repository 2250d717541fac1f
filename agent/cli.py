"""The `reachprobe` command: run, check, validate, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from agent import __version__, eventloop
from agent.config import DEFAULT_LISTEN, AgentSection, Config, ConfigError, load_config
from agent.config.web import WebConfig, listen_policy
from agent.demo import DEMO_LISTEN, demo_config
from agent.once import UnknownTargets, measure_once, selected
from agent.sinks.console import ConsoleSink, live_progress
from measure.verdict import REACHABLE
from probes.results import format_endpoint

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
    check.add_argument(
        "--trace", action="store_true",
        help="also trace the path to every target with TTL-limited probes (raw packets: "
        "needs CAP_NET_RAW, see docs/raw.md); the JSON gets a `trace` per target",
    )  # fmt: skip
    add("validate", "check a config file and exit")
    demo = sub.add_parser(
        "demo",
        help="try the agent on a simulated censored network on this machine (no root, "
        "no network): serves the status page until Ctrl-C",
        description="Start a small censorship simulation on loopback (DNS poisoning and "
        "injection, an SNI filter, a blockpage, a throttled download, healthy sites), run the "
        "agent against it and serve its status page. Nothing leaves this machine; its "
        "temporary files are removed on exit.",
    )
    demo.add_argument("--once", action="store_true", help="probe once, print, exit (like check)")
    demo.add_argument("--format", "-f", choices=["table", "json"], default="table")
    demo.add_argument(
        "--listen", default=DEMO_LISTEN, metavar="ADDR:PORT", type=_listen,
        help="where to serve the status page (default: a free port on 127.0.0.1)",
    )  # fmt: skip
    return parser


def _listen(text: str) -> str:
    """An `ADDR:PORT` argument, checked as `agent.listen` is."""
    try:
        AgentSection(listen=text)
    except ValidationError as exc:
        why = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise argparse.ArgumentTypeError(why) from None
    return text


def _load(path: Path | None, serving: bool) -> tuple[Config, WebConfig | None] | None:
    """The config and, for the commands that serve (run, validate), its web config."""
    try:
        config = load_config(path)
        source = str(path or "built-in default config")
        return config, listen_policy(config.agent, source) if serving else None
    except ConfigError as exc:
        print(f"reachprobe: invalid config\n{exc}", file=sys.stderr)
        return None


async def _check(
    config: Config, names: Sequence[str] | None, fmt: str, *, trace: bool = False
) -> int:
    try:
        count = len(selected(config, names))
    except UnknownTargets as exc:
        print(f"reachprobe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with live_progress(count) as progress:
        measured = await measure_once(config, names, trace=trace, on_report=progress)
    sink = ConsoleSink(fmt)
    sink.configure(config, measured.plan)
    sink.publish(measured.cycle)
    reports = measured.cycle.reports
    return EXIT_OK if all(r.verdict == REACHABLE for r in reports) else EXIT_UNREACHABLE


async def _run(
    config: Config, path: Path | None, web_config: WebConfig | None = None, *, demo: bool = False
) -> int:
    # Imported here, not at the top: the server, prometheus_client, remote-write (protobuf,
    # cramjam) and the other sinks cost `check` and `validate` a third of their start-up.
    from agent.scheduler import Scheduler
    from agent.server import make_app, start_server
    from agent.sinks import Sink
    from agent.sinks.measurement_log import MeasurementLogSink
    from agent.sinks.prometheus import PrometheusSink
    from agent.sinks.remote_write import RemoteWriteSink
    from agent.sinks.status import StatusSink

    metrics, status = PrometheusSink(), StatusSink()
    sinks: list[Sink] = [metrics, status, MeasurementLogSink(metrics.registry)]
    if config.remote_write is not None:
        # After the Prometheus sink in the list: it snapshots the registry that sink just set.
        pusher = RemoteWriteSink(metrics.registry, config.remote_write)
        await pusher.start()
        sinks.append(pusher)
        log.info("pushing metrics to %s (remote-write)", config.remote_write.url)
    scheduler = Scheduler(config, sinks, path)
    loop = asyncio.get_running_loop()
    log.info("event loop: %s", eventloop.name(loop))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.stop)
    loop.add_signal_handler(signal.SIGHUP, scheduler.request_reload)
    runner = None
    if config.agent.listen_address is not None:
        host, port = config.agent.listen_address
        try:
            app = make_app(metrics.registry, scheduler, status.render, web_config)
            runner = await start_server(app, host, port, web_config)
        except OSError as exc:
            log.error("cannot listen on %s: %s", config.agent.listen, exc.strerror or exc)
            return EXIT_USAGE
        # The port may have been 0 (any free port): name the one bound.
        scheme = "https" if web_config and web_config.tls_server_config else "http"
        url = f"{scheme}://{format_endpoint(*runner.addresses[0][:2])}/"
        log.info("serving the status page, /metrics and /healthz on %s", url)
        if demo:
            print(f"reachprobe demo: open {url} in a browser; Ctrl-C stops.", flush=True)
    if not demo:
        log.warning(NOTICE, len(config.targets), config.agent.interval)
    try:
        await scheduler.run()
    finally:
        if runner is not None:
            await runner.cleanup()
    log.info("stopped")
    return EXIT_OK


async def _demo(once: bool, fmt: str, listen: str) -> int:
    try:
        async with demo_config(listen) as (config, path):
            if once:
                # Blocked targets are the simulation working, not a failure of the demo.
                code = await _check(config, None, fmt)
                return EXIT_OK if code == EXIT_UNREACHABLE else code
            return await _run(config, path, demo=True)
    except ConfigError as exc:
        print(f"reachprobe demo: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `reachprobe` console script."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        _logging("warning" if args.once else "info")
        return eventloop.run(_demo(args.once, args.format, args.listen))
    loaded = _load(args.config, serving=args.command != "check")
    if loaded is None:
        return EXIT_USAGE
    config, web_config = loaded
    if args.command == "validate":
        source = args.config or "built-in default config"
        print(f"{source}: ok ({len(config.targets)} targets)")
        return EXIT_OK
    if args.command == "check":
        return eventloop.run(_check(config, args.target, args.format, trace=args.trace))
    _logging(args.log_level)
    return eventloop.run(_run(config, args.config, web_config))
