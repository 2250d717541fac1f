r"""The raw lab: a client four routers away from its servers, with a censor on one router.

    client --- r1 --- r2 --- r3 --- r4 --- server  198.18.100.10 HTTPS/HTTP, 198.18.100.11,
    .2     .1   .6 .5  .10 .9  .14 .13 .18 .17  198.18.100.53 DNS        (198.19.100.x)

Routers answer time-exceeded from their client-facing address (`router_address(k)`), without
ICMP rate limits unless a test sets them (`icmp_ratelimit(ms)`: the kernel's default is 1000,
one error a second per destination after a burst of six). A censor is
installed on router 2 or 3 with `censor(hop, kind)`, acting on the prerouting hook: it sees a
packet before the router checks its TTL, as an in-path box in front of the router would, so
it stops exactly the probes with TTL >= hop.

Namespaces are `rpr-*` (REACHPROBE_RAWLAB_PREFIX), apart from the main lab's `rpl-*`, and
built under the same lock (/run/reachprobe-lab.lock), so the two labs never build at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from tests.lab import netns, services
from tests.lab.procs import LabProcess, lab_env, python_argv

PREFIX = os.environ.get("REACHPROBE_RAWLAB_PREFIX", "rpr-")
CLIENT, SERVER = "client", "server"
ROUTERS = ("r1", "r2", "r3", "r4")
CHAIN = (CLIENT, *ROUTERS, SERVER)
LAB_NET = "198.18.0.0/15"
CLIENT_NET = "198.19.100.0/30"

WEB = "198.18.100.10"
BLACKHOLED = "198.18.100.11"
RESOLVER = "198.18.100.53"
SERVER_PREFIX = "198.18.100.0/24"
BLOCKED_NAME = "blocked.raw.test"
INNOCENT_NAME = "innocent.raw.test"
FORGED_ADDRESS = "198.18.100.66"
CLOSED_PORT = 8443
CENSOR_MARK = "0x16"
CENSOR_KINDS = (
    "blackhole", "syn-rst", "sni-rst", "sni-drop", "host-rst", "host-blockpage", "dns-inject",
)  # fmt: skip
LOCK_TIMEOUT_SECONDS = 180.0
PROBE_TIMEOUT_SECONDS = 120.0


def router_address(hop: int) -> str:
    """The address router `hop` (1..4) answers time-exceeded from: its client-facing one."""
    return f"198.19.100.{4 * hop - 3}"


def _lower_address(hop: int) -> str:
    """The address of the node before link `hop` (the client for 1, else router hop-1)."""
    return f"198.19.100.{4 * hop - 2}"


def censor_script(kind: str) -> str:
    """The nft ruleset a censor of `kind` installs on its router (its own table)."""
    rules = {
        "blackhole": f"ip daddr {BLACKHOLED} drop",
        "syn-rst": f"ip daddr {WEB} tcp dport 443 tcp flags syn reject with tcp reset",
        # Marked by the iptables string match (nftables has none), reset here.
        "sni-rst": f"meta mark {CENSOR_MARK} reject with tcp reset",
        "host-rst": f"meta mark {CENSOR_MARK} reject with tcp reset",
        "sni-drop": f"meta mark {CENSOR_MARK} drop",
        # The injector answers with the blockpage; the request itself goes no further.
        "host-blockpage": f"meta mark {CENSOR_MARK} drop",
        "dns-inject": "",
    }[kind]
    return (
        "table inet rawcensor\ndelete table inet rawcensor\n"
        "table inet rawcensor {\n"
        "  chain pre { type filter hook prerouting priority 0; policy accept;\n"
        f"    {rules}\n  }}\n}}\n"
    )


def string_match(kind: str) -> tuple[str, ...] | None:
    """iptables mangle rule spec that marks the trigger of `kind`, or None."""
    if kind in ("sni-rst", "sni-drop"):
        port, needle = "443", BLOCKED_NAME
    elif kind in ("host-rst", "host-blockpage"):
        port, needle = "80", f"Host: {BLOCKED_NAME}"
    else:
        return None
    return (
        "-p", "tcp", "--dport", port, "-m", "string", "--algo", "bm", "--string", needle,
        "-j", "MARK", "--set-mark", CENSOR_MARK,
    )  # fmt: skip


def unprivileged(user: str) -> list[str]:
    """The argv prefix that runs a command as `user` (and its group) with no capabilities."""
    entry = pwd.getpwnam(user)
    return [
        "setpriv", "--reuid", str(entry.pw_uid), "--regid", str(entry.pw_gid), "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all",
    ]  # fmt: skip


class RawPath:
    """The raw lab; `start()` / `stop()`, idempotent, like topology.Lab."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.workdir = Path(tempfile.mkdtemp(prefix="reachprobe-rawlab-"))
        self.keep_workdir = bool(os.environ.get("REACHPROBE_LAB_KEEP"))
        self.lock = netns.LabLock()
        self.servers: list[LabProcess] = []
        self.injector: LabProcess | None = None
        self.started = False

    def ns(self, role: str) -> str:
        return self.prefix + role

    def start(self, timeout: float = 60.0) -> None:
        """Build the chain and start the servers."""
        if self.started:
            return
        self.lock.acquire(LOCK_TIMEOUT_SECONDS)
        self.started = True
        try:
            for name in netns.namespaces(self.prefix):
                netns.destroy(name)
            self._build()
            self._start_servers(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _build(self) -> None:
        for role in CHAIN:
            netns.create(self.ns(role))
        for hop in range(1, len(CHAIN)):
            lower, upper = self.ns(CHAIN[hop - 1]), self.ns(CHAIN[hop])
            netns.veth(lower, "up0", upper, "down0")
            netns.add_address(lower, "up0", f"{_lower_address(hop)}/30")
            netns.add_address(upper, "down0", f"{router_address(hop)}/30")
        netns.add_address(self.ns(SERVER), "lo", SERVER_PREFIX)
        netns.add_route(self.ns(CLIENT), LAB_NET, router_address(1))
        for hop, role in enumerate(ROUTERS, start=1):
            netns.add_route(self.ns(role), LAB_NET, router_address(hop + 1))
            if hop > 1:
                netns.add_route(self.ns(role), CLIENT_NET, _lower_address(hop))
            netns.sysctl(self.ns(role), "net.ipv4.ip_forward", "1")
            netns.sysctl(self.ns(role), "net.ipv4.icmp_ratelimit", "0")
        netns.add_route(self.ns(SERVER), CLIENT_NET, _lower_address(len(CHAIN) - 1))

    def _start_servers(self, deadline: float) -> None:
        pki = services.LabPki(self.workdir / "pki")
        tls = pki.leaf("raw", [BLOCKED_NAME, INNOCENT_NAME])
        zone = self.workdir / "zone.yaml"
        zone.write_text(yaml.safe_dump({BLOCKED_NAME: [WEB], INNOCENT_NAME: [WEB]}))
        specs = [
            ("raw-https", ("web", "--listen", f"{WEB}:443", "--mode", "valid", *tls)),
            ("raw-http", ("web", "--listen", f"{WEB}:80", "--mode", "valid")),
            ("raw-dns", ("dns", "--listen", f"{RESOLVER}:53", "--zone", str(zone))),
        ]
        self.servers = [
            services.start_server(
                services.ServerSpec(name, SERVER, args), self.ns(SERVER), self.workdir
            )
            for name, args in specs
        ]
        services.wait_ready(self.servers, deadline)

    @contextlib.contextmanager
    def censor(self, hop: int, kind: str) -> Iterator[None]:
        """A censor of `kind` on router `hop` for the with-block, removed after it."""
        if kind not in CENSOR_KINDS:
            raise ValueError(f"unknown censor kind {kind!r}")
        ns = self.ns(ROUTERS[hop - 1])
        netns.run(["nft", "-f", "-"], ns=ns, input=censor_script(kind))
        spec = string_match(kind)
        if spec:
            netns.run(["iptables", "-t", "mangle", "-A", "PREROUTING", *spec], ns=ns)
        injector = {
            "dns-inject": ("dns", "--address", FORGED_ADDRESS),
            "host-blockpage": ("blockpage",),
        }.get(kind)
        if injector:
            argv = python_argv(
                "-m", "tests.lab.injector", *injector, "--device", "down0", "--name", BLOCKED_NAME
            )  # fmt: skip
            self.injector = LabProcess("injector", ns, argv, self.workdir / "injector.log")
            services.wait_ready([self.injector], time.monotonic() + 10)
        try:
            yield
        finally:
            if self.injector is not None:
                self.injector.stop()
                self.injector = None
            netns.run(["nft", "delete", "table", "inet", "rawcensor"], ns=ns)
            netns.run(["iptables", "-t", "mangle", "-F", "PREROUTING"], ns=ns)

    @contextlib.contextmanager
    def icmp_ratelimit(self, milliseconds: int) -> Iterator[None]:
        """Every router rate-limits its ICMP errors to one per `milliseconds` per destination
        (after the kernel's burst) for the with-block."""
        for role in ROUTERS:
            netns.sysctl(self.ns(role), "net.ipv4.icmp_ratelimit", str(milliseconds))
        try:
            yield
        finally:
            for role in ROUTERS:
                netns.sysctl(self.ns(role), "net.ipv4.icmp_ratelimit", "0")

    def probe(self, args: Sequence[str], *, user: str | None = None) -> dict:
        """Run `python -m probes.raw ARGS` in the client namespace; its JSON.

        With `user`, the probe runs as that user with no capabilities at all (setpriv).
        """
        argv = [
            *netns.ns_prefix(self.ns(CLIENT)),
            *(unprivileged(user) if user else []),
            *python_argv("-m", "probes.raw", "--rate", "200", "--global-rate", "400",
                         "--timeout", "1", *args),
        ]  # fmt: skip
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=lab_env(), timeout=PROBE_TIMEOUT_SECONDS
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr}")
        return json.loads(proc.stdout)

    def stop(self) -> None:
        """Stop the servers and delete every namespace; safe to call twice."""
        if not self.started:
            return
        if self.injector is not None:
            self.injector.stop()
        for server in self.servers:
            server.stop()
        for name in netns.namespaces(self.prefix):
            netns.destroy(name)
        self.lock.release()
        self.started = False
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
