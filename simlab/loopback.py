"""A whole loopback lab in one process: every server on 127.0.0.1, a zone with one name per DNS
behaviour, and an agent config pointing at it. Used by the pytest fixtures (and usable by a
future offline demo).

Addresses: all servers listen on 127.0.0.1; `127.0.0.0/16` is the agent's `bogon_exempt`, so
`BOGON_ADDRESS` (127.99.0.1, also loopback) is a bogon that is still safe to connect to by
mistake; a trap server listens there to count such mistakes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simlab.certs import Pki, server_context
from simlab.dns import DnsServer
from simlab.doh import DohServer
from simlab.intercept import InterceptServer
from simlab.mtproto import MtprotoServer
from simlab.net import closed_port, format_hostport
from simlab.quic import UDP_MODES, H3Server, UdpServer
from simlab.sni import SniFilter
from simlab.tcp import RAW_MODES, RawServer
from simlab.web import HttpServer
from simlab.zone import Behaviour, Zone

HOST = "127.0.0.1"
BOGON_EXEMPT = "127.0.0.0/16"
BOGON_ADDRESS = "127.99.0.1"
CONTROL_ONLY_ADDRESS = "127.0.0.4"
FORGED_ADDRESS = "127.0.0.5"
WRONG_NAME = "other.test"
# The name the `sni` server's censor resets (the certificate behind it covers it).
SNI_BLOCKED = "blocked.test"
# Where an ISP redirects blocked sites: a Rostelecom-style blockpage host that OONI's (and the
# agent's shipped) fingerprints know. Nothing needs to serve it: a probe must not follow it.
ISP_REDIRECT = "http://block.ip.center.rt.ru/?rkn=reachprobe-lab"
# Names the trusted leaf certificate covers (the DoH endpoint is reached by its IP).
CERT_NAMES = ("valid.test", "blocked.test", "inject.test", "confirmed.test", HOST)

TEST_ZONE: dict[str, Behaviour] = {
    "valid.test": Behaviour("answer", (HOST,)),
    "blocked.test": Behaviour("answer", (HOST,)),
    "wrongname.test": Behaviour("answer", (HOST,)),
    "untrusted.test": Behaviour("answer", (HOST,)),
    "inconsistent.test": Behaviour("answer", (HOST,)),
    "confirmed.test": Behaviour("answer", (HOST,)),
    "nx.test": Behaviour("nxdomain"),
    "nodata.test": Behaviour("nodata"),
    "servfail.test": Behaviour("servfail"),
    "refused.test": Behaviour("refused"),
    "silent.test": Behaviour("silent"),
    "bogon.test": Behaviour("answer", (BOGON_ADDRESS,)),
    # A public-looking answer beside a bogon: the whole answer is a bogon answer.
    "mixed.test": Behaviour("answer", (HOST, BOGON_ADDRESS)),
    "inject.test": Behaviour("inject", (HOST,), forged=(FORGED_ADDRESS,)),
    "stray.test": Behaviour("stray", (HOST,), forged=(FORGED_ADDRESS,)),
    "truncate.test": Behaviour("truncate", (HOST,)),
}
# The control resolver sees the uncensored truth: every name resolves, and two names resolve
# to an address the test resolver never gives.
CONTROL_ZONE: dict[str, Behaviour] = {
    **{name: Behaviour("answer", (HOST,)) for name in TEST_ZONE},
    "inconsistent.test": Behaviour("answer", (CONTROL_ONLY_ADDRESS,)),
    "confirmed.test": Behaviour("answer", (CONTROL_ONLY_ADDRESS,)),
}

Server = (
    DnsServer
    | DohServer
    | HttpServer
    | RawServer
    | MtprotoServer
    | InterceptServer
    | H3Server
    | UdpServer
)


@dataclass
class LoopbackLab:
    """Every server the loopback tests need; `start()` binds them all on ephemeral ports.

    `web` maps a role to its server: `https`, `http` (valid page), `wrongname`, `untrusted`
    (HTTPS with a bad certificate), `blockpage`, `status` (503), `redirect` (same host),
    `redirect-away` (to `ISP_REDIRECT`, another host), `isp` (an unfingerprinted ISP page),
    `drip` (a blockpage head, then a byte a second), the raw modes `reset`, `eof`, `silent`,
    `alert`, `http403`, and `sni` (resets a ClientHello naming `SNI_BLOCKED`, relays any
    other to the `https` server). `trap` listens on the bogon address (a target naming a
    bogon name must use the trap's port, the one the agent would connect to), `mtproto` is
    a fake Telegram DC, and `intercept` a transparent proxy's box with its own CA.

    `quic` maps a role to a UDP server: `https` and `untrusted` are HTTP/3 servers on the UDP
    port of the web server of that role (one URL reaches both, as on a real site that serves
    HTTP/3), `sni` is silent on the `sni` web server's UDP port (a site whose UDP 443 is
    dropped, its TCP path fine), and the `UDP_MODES` `silent`, `garbage` and `version`
    misbehave on ports of their own; nothing listens on UDP `closed_udp_port`.
    """

    directory: Path
    pki: Pki = field(init=False)
    dns: DnsServer = field(init=False)
    doh: DohServer = field(init=False)
    web: dict[str, HttpServer | RawServer] = field(init=False, default_factory=dict)
    trap: RawServer = field(init=False)
    mtproto: MtprotoServer = field(init=False)
    intercept: InterceptServer = field(init=False)
    closed_port: int = field(init=False)
    quic: dict[str, H3Server | UdpServer] = field(init=False, default_factory=dict)
    closed_udp_port: int = field(init=False)

    async def start(self) -> LoopbackLab:
        """Create the PKI and start every server; returns self."""
        self.pki = Pki(self.directory)
        good = server_context(self.pki.issue(*CERT_NAMES))
        self.dns = await DnsServer(Zone(TEST_ZONE), HOST).start()
        self.doh = await DohServer(Zone(CONTROL_ZONE), good, HOST).start()
        self.trap = await RawServer("silent", BOGON_ADDRESS).start()
        https_like = {
            "https": good,
            "wrongname": server_context(self.pki.issue(WRONG_NAME)),
            "untrusted": server_context(self.pki.issue("untrusted.test", trusted=False)),
        }
        for role, ctx in https_like.items():
            self.web[role] = await HttpServer("valid", HOST, ssl_context=ctx).start()
        for mode in ("status", "redirect"):
            self.web[mode] = await HttpServer(mode, HOST).start()
        self.web["http"] = await HttpServer("valid", HOST).start()
        for mode in ("blockpage", "isp", "drip"):
            self.web[mode] = await HttpServer(mode, HOST).start()
        away = HttpServer("redirect", HOST, location=ISP_REDIRECT)
        self.web["redirect-away"] = await away.start()
        for mode in RAW_MODES:
            self.web[mode] = await RawServer(mode, HOST).start()
        upstream = (HOST, self.port("https"))
        self.web["sni"] = await SniFilter([SNI_BLOCKED], upstream, HOST).start()
        self.mtproto = await MtprotoServer(HOST).start()
        self.intercept = await InterceptServer(HOST).start()
        self.closed_port = closed_port(HOST)
        await self._start_quic()
        return self

    async def _start_quic(self) -> None:
        leaves = {
            "https": self.pki.issue_files("h3", *CERT_NAMES),
            "untrusted": self.pki.issue_files("h3-untrusted", "untrusted.test", trusted=False),
        }
        for role, (cert, key) in leaves.items():
            self.quic[role] = await H3Server(cert, key, HOST, self.port(role)).start()
        self.quic["sni"] = await UdpServer("silent", HOST, self.port("sni")).start()
        for mode in UDP_MODES:
            self.quic[mode] = await UdpServer(mode, HOST).start()
        self.closed_udp_port = closed_port(HOST, socket.SOCK_DGRAM)

    async def close(self) -> None:
        """Stop every server."""
        servers: list[Server] = [self.dns, self.doh, self.trap, self.mtproto, self.intercept]
        servers += self.web.values()
        servers += self.quic.values()
        for server in servers:
            await server.close()

    def port(self, role: str) -> int:
        """The port of the web server playing `role`."""
        return self.web[role].port

    def url(self, role: str, hostname: str, scheme: str | None = None) -> str:
        """A URL naming `hostname` that reaches the web server playing `role`.

        The scheme is the server's own, or `scheme` for the raw servers (which fail either).
        """
        server = self.web[role]
        if isinstance(server, HttpServer):
            scheme = "https" if server.ssl_context else "http"
        return f"{scheme}://{format_hostport(hostname, server.port)}/"

    def config(self, targets: list[dict[str, Any]], *, control: bool = True) -> dict[str, Any]:
        """An agent config (as data) probing `targets` through this lab's resolvers."""
        resolvers: dict[str, Any] = {
            "test": {"type": "udp", "servers": [format_hostport(HOST, self.dns.port)]},
            "bogon_exempt": [BOGON_EXEMPT],
            "injection_window": "300ms",
        }
        if control:
            resolvers["control"] = {"type": "doh", "url": self.doh.url}
        return {
            "agent": {
                "vantage": "loopback",
                "role": "test",
                "timeout": "1s",
                "interval": "60s",
                "concurrency": 16,
                "listen": format_hostport(HOST, closed_port(HOST)),
            },
            "resolvers": resolvers,
            "tls": {"ca_file": str(self.pki.ca_file)},
            "targets": targets,
            "blockpages": [{"name": "lab-isp", "pattern": r"rkn\.gov\.ru"}],
        }

    def write_config(self, path: Path, targets: list[dict[str, Any]], **options: Any) -> Path:
        """Write `config(targets, **options)` as YAML to `path`; returns `path`."""
        path.write_text(yaml.safe_dump(self.config(targets, **options), allow_unicode=True))
        return path
