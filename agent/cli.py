"""The `reachprobe` command: run, check, validate, demo, config."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from agent import __version__, eventloop, exits
from agent.config import (
    DEFAULT_CONFIG_NAME,
    DEFAULT_LISTEN,
    AgentSection,
    Config,
    ConfigError,
    load_config,
)
from agent.config.web import WebConfig, listen_policy
from agent.demo import DEMO_LISTEN, demo_config
from agent.explain import plural
from agent.once import UnknownTargets, measure_once, selected
from agent.resources import shipped_file
from agent.sinks.console import ConsoleSink, live_progress
from measure.verdict import REACHABLE
from probes.results import format_endpoint

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("reachprobe")

NOTICE = (
    "reachprobe sends ordinary DNS queries, TCP connections, TLS handshakes and HTTP requests "
    "(and QUIC, over UDP, to `http3` targets) to the %s every %gs. Anyone watching this "
    "network (your ISP, the censor) can see those connections; in some countries testing "
    "blocked sites carries risk. See the README's 'Risks' section."
)
PLACEHOLDER_VANTAGE = AgentSection().vantage
# More names than this and an unknown --target lists only the closest ones.
MAX_LISTED_TARGETS = 20
LOG_LEVELS = ("debug", "info", "warning", "error")
FORMAT_HELP = "table for people (the default), json for programs (README: 'JSON output')"


def placeholder_warning(config: Config) -> str | None:
    """A warning while agent.vantage is still the shipped placeholder name."""
    if config.agent.vantage != PLACEHOLDER_VANTAGE:
        return None
    return (
        f"agent.vantage is still the placeholder {PLACEHOLDER_VANTAGE!r}: set a name unique to "
        "this vantage point, or its series mix with every other unnamed agent's "
        "(docs/operators.md)"
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
    version = f"reachprobe {__version__}"
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description or help_text)
        # Also after the command (`reachprobe run --version`), where people type it.
        p.add_argument("--version", action="version", version=version)
        return p

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = command(name, help_text)
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
    run.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS,
        help="how much the agent logs to stderr (default: info: start, reloads, problems)",
    )  # fmt: skip
    check = add("check", "probe every target once, print the results, exit")
    check.add_argument(
        "--target", "-t", action="extend", nargs="+", metavar="NAME",
        help="only these targets (names; the flag may also be repeated)",
    )  # fmt: skip
    check.add_argument(
        "--format", "-f", choices=["table", "json"], default="table", help=FORMAT_HELP
    )
    check.add_argument(
        "--trace", action="store_true",
        help="also trace the path to every target with TTL-limited probes (raw packets: "
        "needs CAP_NET_RAW, see docs/raw.md); the JSON gets a `trace` per target",
    )  # fmt: skip
    add("validate", "check a config file and exit")
    demo = command(
        "demo",
        "try the agent on a simulated censored network on this machine (no root, "
        "no network): serves the status page until Ctrl-C",
        description="Start a small censorship simulation on loopback (DNS poisoning and "
        "injection, an SNI filter, a blockpage, a throttled download, healthy sites), run the "
        "agent against it and serve its status page. Nothing leaves this machine; its "
        "temporary files are removed on exit.",
    )
    demo.add_argument("--once", action="store_true", help="probe once, print, exit (like check)")
    demo.add_argument(
        "--format", "-f", choices=["table", "json"],
        help=f"with --once: {FORMAT_HELP}",
    )  # fmt: skip
    demo.add_argument(
        "--listen", default=DEMO_LISTEN, metavar="ADDR:PORT", type=_listen,
        help="where to serve the status page (default: a free port on 127.0.0.1)",
    )  # fmt: skip
    config = command("config", "print a config to start your own from")
    config.add_argument(
        "which", choices=["default"],
        help="default: the built-in config (every shipped target), e.g. "
        "`reachprobe config default > reachprobe.yaml`",
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


def _unknown_targets(unknown: Sequence[str], known: Sequence[str]) -> str:
    """Which names are unknown and what the valid ones are: all of them when they are few,
    else the closest to each unknown one."""
    what = f"no target named {', '.join(unknown)}"
    if not known:
        return f"{what}: the config has no targets"
    if len(known) <= MAX_LISTED_TARGETS:
        return f"{what}; the targets are: {', '.join(known)}"
    close = dict.fromkeys(m for name in unknown for m in difflib.get_close_matches(name, known))
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{what}{hint} ({plural(len(known), 'target')}: `reachprobe validate` checks the file)"


async def _check(
    config: Config,
    names: Sequence[str] | None,
    fmt: str,
    *,
    trace: bool = False,
    title: str = "reachprobe check",
) -> int:
    try:
        count = len(selected(config, names))
    except UnknownTargets as exc:
        known = [t.name for t in config.targets]
        print(f"reachprobe: {_unknown_targets(exc.names, known)}", file=sys.stderr)
        return EXIT_USAGE
    with live_progress(count) as progress:
        measured = await measure_once(config, names, trace=trace, on_report=progress)
    sink = ConsoleSink(fmt, title=title)
    sink.configure(config, measured.plan)
    sink.publish(measured.cycle)
    reports = measured.cycle.reports
    return EXIT_OK if all(r.verdict == REACHABLE for r in reports) else EXIT_UNREACHABLE


async def _run(
    config: Config, path: Path | None, web_config: WebConfig | None = None, *, demo: bool = False
) -> int:
    # Imported here, not at the top: the server, prometheus_client, remote-write (protobuf,
    # cramjam) and the other sinks cost `check` and `validate` a third of their start-up.
    from prometheus_client import CollectorRegistry

    from agent.scheduler import Scheduler
    from agent.server import make_app, start_server
    from agent.sinks import Sink
    from agent.sinks.measurement_log import MeasurementLogSink
    from agent.sinks.prometheus import PrometheusSink
    from agent.sinks.remote_write import RemoteWriteSink
    from agent.sinks.status import StatusSink

    # The agent's registry: the Prometheus sink writes it; /metrics, remote-write and the
    # measurement log's own counters read or register in it.
    registry = CollectorRegistry(auto_describe=True)
    metrics, status = PrometheusSink(registry), StatusSink()
    sinks: list[Sink] = [metrics, status, MeasurementLogSink(registry)]
    if config.remote_write is not None:
        sinks.append(RemoteWriteSink(registry, config.remote_write))
        log.info("pushing metrics to %s (remote-write)", config.remote_write.url)
    scheduler = Scheduler(config, sinks, path)
    loop = asyncio.get_running_loop()
    log.info("event loop: %s", eventloop.name(loop))
    stopped_by: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        stopped_by.append(sig)
        scheduler.stop()

    # These replace `exits.stoppable`'s handlers: for a server, a stop is the normal end.
    for sig in exits.STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    loop.add_signal_handler(signal.SIGHUP, scheduler.request_reload)
    runner = None
    if config.agent.listen_address is not None:
        host, port = config.agent.listen_address
        try:
            app = make_app(registry, scheduler, status.render, web_config)
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
        log.warning(NOTICE, plural(len(config.targets), "configured target"), config.agent.interval)
        placeholder = placeholder_warning(config)
        if placeholder:
            log.warning("%s", placeholder)
    try:
        await scheduler.run()
    finally:
        if runner is not None:
            await runner.cleanup()
    log.info("stopped by %s", stopped_by[0].name if stopped_by else "request")
    return EXIT_OK


async def _demo(once: bool, fmt: str, listen: str) -> int:
    try:
        async with demo_config(listen) as (config, path):
            if once:
                # Blocked targets are the simulation working, not a failure of the demo.
                code = await _check(config, None, fmt, title="reachprobe demo")
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
    if args.command == "config":
        sys.stdout.write(shipped_file(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8"))
        return EXIT_OK
    try:
        eventloop.loop_factory()
    except ValueError as exc:
        print(f"reachprobe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = "demo --once" if args.command == "demo" and args.once else args.command
    try:
        code = _command(args, command)
        sys.stdout.flush()  # here, so that a closed pipe is seen here and not at exit
        return code
    except BrokenPipeError:
        exits.quiet_stdout()
        return exits.EXIT_PIPE
    except KeyboardInterrupt:
        # Ctrl-C outside the event loop (while loading the config): nothing to clean up.
        exits.say_stopped(command, signal.SIGINT)
        return exits.signal_exit(signal.SIGINT)


def _command(args: argparse.Namespace, name: str) -> int:
    """Run the command `args` name (`name` is how a stop message calls it)."""
    if args.command == "demo":
        if args.format is not None and not args.once:
            print(
                "reachprobe demo: --format needs --once (without it the demo serves its "
                "status page until Ctrl-C)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        _logging("warning" if args.once else "info")
        demo = _demo(args.once, args.format or "table", args.listen)
        return eventloop.run(exits.stoppable(demo, name))
    loaded = _load(args.config, serving=args.command != "check")
    if loaded is None:
        return EXIT_USAGE
    config, web_config = loaded
    if args.command == "validate":
        source = args.config or "built-in default config"
        print(f"{source}: ok ({plural(len(config.targets), 'target')})")
        placeholder = placeholder_warning(config)
        if placeholder:
            print(f"reachprobe: warning: {placeholder}", file=sys.stderr)
        return EXIT_OK
    if args.command == "check":
        checking = _check(config, args.target, args.format, trace=args.trace)
        return eventloop.run(exits.stoppable(checking, name))
    _logging(args.log_level)
    log.info(
        "config: %s (%s)",
        args.config or f"the built-in {shipped_file(DEFAULT_CONFIG_NAME)}",
        plural(len(config.targets), "target"),
    )
    return eventloop.run(exits.stoppable(_run(config, args.config, web_config), name))
