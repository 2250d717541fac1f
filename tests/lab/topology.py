"""The Lab: a small internet on one machine, with a censor, two vantages and a Prometheus.

    lab = Lab()
    lab.start()          # namespaces, links, servers, Prometheus, both agents
    lab.censor.apply(censor.blackhole("x", "198.18.1.11"))
    lab.prometheus.query('reachprobe:target_blocked_at_vantage == 1')
    lab.stop()           # everything gone: processes, namespaces (and so every veth)

`start` first removes whatever a crashed earlier run with the same prefix left behind (the
lock on /run/netns says no live run owns it), and `stop` is idempotent and registered at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.lab import netns, services, world
from tests.lab.agents import CENSORED_VANTAGE, CONTROL_VANTAGE, Agent
from tests.lab.censor import Censor
from tests.lab.procs import LabProcess
from tests.lab.prometheus import Prometheus

DEFAULT_PREFIX = os.environ.get("REACHPROBE_LAB_PREFIX", "rpl-")
START_TIMEOUT_SECONDS = 60.0
# How long `start` waits for another lab run (another `make test`) to finish with the lock.
LOCK_TIMEOUT_SECONDS = 180.0


def unavailable() -> str | None:
    """Why the lab cannot run on this machine (not root, a tool missing), or None."""
    reason = netns.missing_requirements()
    if reason is None and Prometheus.binary() is None:
        reason = "the censorship lab needs prometheus (Debian package prometheus)"
    return reason


def skip_unless_lab_can_run() -> None:
    """Skip the calling test module, with one message, when the lab cannot run here."""
    import pytest

    reason = unavailable()
    if reason:
        pytest.skip(f"{reason}; lab tests skipped", allow_module_level=True)


class Lab:
    """The censorship lab. Requires root; see `netns.missing_requirements`."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, workdir: Path | None = None) -> None:
        self.prefix = prefix
        # A workdir we made is removed at stop unless kept (REACHPROBE_LAB_KEEP=1, or a test
        # failed and the fixture wants the logs).
        self.keep_workdir = workdir is not None or bool(os.environ.get("REACHPROBE_LAB_KEEP"))
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="reachprobe-lab-"))
        self.lock = netns.LabLock()
        self.servers: list[LabProcess] = []
        self.pki: services.LabPki | None = None
        self.censor = Censor(self.ns(world.CENSOR), self.workdir)
        self.agents: dict[str, Agent] = {}
        self.prometheus = Prometheus(
            self.ns(world.MON),
            self.workdir,
            [world.AGENT_LISTEN[world.CENSORED], world.AGENT_LISTEN[world.CONTROL]],
        )
        self.started = False

    def ns(self, role: str) -> str:
        """The namespace name of a role (`censored`, `censor`, ...)."""
        return self.prefix + role

    @property
    def censored(self) -> Agent:
        """The agent at the censored (test) vantage."""
        return self.agents[world.CENSORED]

    @property
    def control(self) -> Agent:
        """The agent at the control vantage."""
        return self.agents[world.CONTROL]

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Build the network, start servers, Prometheus and both agents; wait until scraped."""
        if self.started:
            return
        self.lock.acquire(LOCK_TIMEOUT_SECONDS)
        atexit.register(self.stop)
        self.started = True
        deadline = time.monotonic() + timeout
        try:
            self.clean_stale()
            self.build_network()
            self.start_servers(deadline)
            self.start_monitoring(deadline)
        except BaseException:
            self.stop()
            raise

    def clean_stale(self) -> None:
        """Remove namespaces (and their processes) left by an earlier run with our prefix."""
        for name in netns.namespaces(self.prefix):
            netns.destroy(name)

    def build_network(self) -> None:
        """Namespaces, veths, addresses, routes and forwarding, as world.py describes them."""
        for role in world.ROLES:
            netns.create(self.ns(role))
            # Set before the veths exist, so that they inherit it: no duplicate address
            # detection (link-local addresses included), no routes from advertisements.
            for key in ("accept_dad", "accept_ra"):
                netns.sysctl(self.ns(role), f"net.ipv6.conf.default.{key}", "0")
        for link in world.LINKS:
            netns.veth(self.ns(link.a), link.a_dev, self.ns(link.b), link.b_dev)
            for role, device, cidr in link.addresses():
                netns.add_address(self.ns(role), device, cidr)
        for role in world.ROLES:
            local = [*world.LOCAL_PREFIXES.get(role, ()), *world.local_addresses6(role)]
            for prefix in local:
                netns.add_address(self.ns(role), "lo", prefix)
        for role, prefix, via in world.ROUTES:
            netns.add_route(self.ns(role), prefix, via)
        for role in world.ROUTERS:
            netns.sysctl(self.ns(role), "net.ipv4.ip_forward", "1")
            netns.sysctl(self.ns(role), "net.ipv6.conf.all.forwarding", "1")

    def start_servers(self, deadline: float) -> None:
        """Certificates, the zone, and every server of the lab's internet."""
        self.pki = services.LabPki(self.workdir / "pki")
        zone_file = services.write_zone(self.workdir / "zone.yaml")
        specs = services.server_specs(self.pki, zone_file)
        self.servers = [services.start_server(s, self.ns(s.role), self.workdir) for s in specs]
        services.wait_ready(self.servers, deadline)

    def start_monitoring(self, deadline: float) -> None:
        """Both agents and Prometheus; returns once Prometheus has scraped both agents."""
        assert self.pki is not None
        for vantage in (CENSORED_VANTAGE, CONTROL_VANTAGE):
            agent = Agent(vantage, self.ns(vantage.role_ns), self.workdir, self.pki.ca_file)
            self.agents[vantage.role_ns] = agent
            agent.start()
        self.prometheus.start()
        for agent in self.agents.values():
            agent.wait_serving(deadline)
        self.prometheus.wait_ready(deadline)
        self.prometheus.wait_for(
            "count(reachprobe_agent_info) by (role)",
            lambda result: len(result) == 2,
            timeout=max(deadline - time.monotonic(), 1.0),
            what="Prometheus scraping both agents",
        )

    def stop(self) -> None:
        """Stop everything and delete every namespace; safe to call twice, or unstarted."""
        if not self.started:
            self._remove_workdir()
            return
        for agent in self.agents.values():
            agent.stop()
        self.prometheus.stop()
        for server in self.servers:
            server.stop()
        for name in netns.namespaces(self.prefix):
            netns.destroy(name)
        self.lock.release()
        self.started = False
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
