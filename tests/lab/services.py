"""The lab's servers: simlab' DNS, DoH and web servers run inside the namespaces.

Each server is `python -m simlab <kind> ...` in its namespace; it prints one
`ready <kind> ...` line once it accepts traffic, which is what `wait_ready` waits for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from simlab.certs import Pki
from tests.lab import world
from tests.lab.procs import LabProcess, python_argv


@dataclass(frozen=True)
class ServerSpec:
    """One server to run: a name for logs, a namespace role, and simlab arguments."""

    name: str
    role: str
    args: tuple[str, ...]


def start_server(spec: ServerSpec, ns: str, log_dir: Path) -> LabProcess:
    """Start one server (without waiting for it)."""
    argv = python_argv("-m", "simlab", *spec.args)
    return LabProcess(spec.name, ns, argv, log_dir / f"{spec.name}.log")


def wait_ready(procs: Iterable[LabProcess], deadline: float) -> None:
    """Wait until every server has printed its `ready` line; raise with its log if one dies.

    `deadline` is a time.monotonic() value.
    """
    pending = list(procs)
    while pending:
        for proc in list(pending):
            proc.check_running()
            if any(line.startswith("ready ") for line in proc.log_tail(50).splitlines()):
                pending.remove(proc)
        if pending and time.monotonic() > deadline:
            names = ", ".join(p.name for p in pending)
            raise TimeoutError(f"servers not ready in time: {names}\n{pending[0].log_tail()}")
        if pending:
            time.sleep(0.05)


def write_zone(path: Path, overrides: Mapping[str, object] | None = None) -> Path:
    """Write the lab zone (world.zone_records) as simlab zone YAML, with `overrides`.

    An override maps a name to a simlab behaviour (`nxdomain`, an address list, an
    `inject` mapping ...): that is how the censor's lying resolver is made.
    """
    zone: dict[str, object] = dict(world.zone_records())
    zone.update(overrides or {})
    path.write_text(yaml.safe_dump(zone, sort_keys=True))
    return path


class LabPki:
    """The lab's certificates: one trusted CA (the agents' `tls.ca_file`) and leaf files."""

    def __init__(self, directory: Path) -> None:
        self.pki = Pki(directory)
        self.ca_file = self.pki.ca_file

    def leaf(self, stem: str, identities: Iterable[str]) -> tuple[str, ...]:
        """Issue a leaf for `identities`; return the `--cert C --key K` server arguments."""
        cert, key = self.pki.issue_files(stem, *identities)
        return ("--cert", str(cert), "--key", str(key))


# The blockpage server's own name: its HTTPS certificate (from the lab CA) is valid for it and
# for no name a resolver hijacks to it, as an ISP's blockpage host presents its own.
BLOCKPAGE_CERT_NAME = "warning.isp.test"


def server_specs(pki: LabPki, zone_file: Path) -> list[ServerSpec]:
    """The servers of the lab's internet (the censor's helpers are in censor.py)."""
    web_tls = pki.leaf("web", [*world.names_in(world.WEB), *world.CERT_FILLER_NAMES])
    cloud_tls = pki.leaf("cloud", world.names_in(world.CLOUD))
    doh_tls = pki.leaf("doh", [world.DOH_ADDRESS])
    blockpage_tls = pki.leaf("blockpage", [BLOCKPAGE_CERT_NAME])
    page = ("--mode", "valid", "--body", world.PAGE_BODY)
    h3_page = ("--body", world.PAGE_BODY)
    return [
        ServerSpec(
            "dns",
            world.INFRA,
            ("dns", "--listen", f"{world.DNS_ADDRESS}:53", "--zone", str(zone_file)),
        ),
        ServerSpec(
            "doh",
            world.INFRA,
            ("doh", "--listen", f"{world.DOH_ADDRESS}:443", "--zone", str(zone_file), *doh_tls),
        ),
        ServerSpec(
            "blockpage",
            world.INFRA,
            ("web", "--listen", f"{world.BLOCKPAGE_ADDRESS}:80", "--mode", "blockpage"),
        ),
        ServerSpec(
            "blockpage-https",
            world.INFRA,
            (
                "web",
                "--listen",
                f"{world.BLOCKPAGE_ADDRESS}:443",
                "--mode",
                "blockpage",
                *blockpage_tls,
            ),
        ),
        ServerSpec(
            "isp-page",
            world.INFRA,
            ("web", "--listen", f"{world.ISP_PAGE_ADDRESS}:80", "--mode", "isp"),
        ),
        ServerSpec("dc", world.INFRA, ("mtproto", "--listen", f"{world.DC_ADDRESS}:443")),
        # The web and cloud namespaces host whole prefixes on lo; one wildcard listener per
        # port answers on every address in them.
        ServerSpec("web-https", world.WEB, ("web", "--listen", "0.0.0.0:443", *page, *web_tls)),
        # The dual-stack hosts over IPv6 (simlab binds an IPv6 wildcard IPv6-only).
        ServerSpec("web-https6", world.WEB, ("web", "--listen", "[::]:443", *page, *web_tls)),
        ServerSpec("web-http", world.WEB, ("web", "--listen", "0.0.0.0:80", *page)),
        # HTTP/3 on UDP 443 of the HTTP/3 hosts, with the same certificate and page. One
        # server per address, not a wildcard: a UDP socket bound to 0.0.0.0 answers from its
        # route's source address, which a client's connected socket rightly ignores.
        *(
            ServerSpec(
                f"web-h3-{key}",
                world.WEB,
                ("h3", "--listen", f"{world.HOSTS[key].address}:443", *h3_page, *web_tls),
            )
            for key in world.HTTP3_TARGETS
        ),
        ServerSpec(
            "cloud-https", world.CLOUD, ("web", "--listen", "0.0.0.0:443", *page, *cloud_tls)
        ),
        # One process answers the whole sampled /16: a connect is all a prefix sweep needs.
        ServerSpec(
            "prefix-responder",
            world.CLOUD,
            ("web", "--listen", f"0.0.0.0:{world.SAMPLED_PORT}", "--mode", "silent"),
        ),
    ]
