"""The demo world behind `reachprobe demo`: a small censored network on loopback, in-process.

One censor, one of each kind of interference, next to services it leaves alone:

- `poisoned.test`: the resolver answers with a bogon (DNS blocking);
- `injected.test`: an on-path injector races a forged answer (DNS blocking);
- `messenger.test`: an SNI filter resets the handshake naming it, and lets the same address
  through under any other name (TLS blocking, SNI-based);
- `blocked.test`: the ISP serves a blockpage instead (HTTP blocking);
- a fixed address nobody accepts connections on (TCP/IP blocking);
- `video.test`: a throttled download: slow, but it arrives (no single-run verdict; it shows
  as slow beside `news.test`'s download of the same size at full speed);
- `news.test` and `canary.test`: healthy.

The uncensored truth (every name resolves to the real server) is the control DoH resolver.
Every server listens on 127.0.0.1; the bogon is `127.99.0.1`, outside `BOGON_EXEMPT`, so the
agent never connects to it, and nothing leaves loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from simlab.certs import Pki, server_context
from simlab.dns import DnsServer
from simlab.doh import DohServer
from simlab.loopback import BOGON_ADDRESS, BOGON_EXEMPT, FORGED_ADDRESS, HOST
from simlab.net import closed_port, format_hostport
from simlab.sni import SniFilter
from simlab.web import HttpServer
from simlab.zone import Behaviour, Zone

SNI_BLOCKED = "messenger.test"
NAMES = (
    "news.test",
    "canary.test",
    "video.test",
    "blocked.test",
    SNI_BLOCKED,
    "poisoned.test",
    "injected.test",
)
TEST_ZONE: dict[str, Behaviour] = {
    **{name: Behaviour("answer", (HOST,)) for name in NAMES},
    "poisoned.test": Behaviour("answer", (BOGON_ADDRESS,)),
    "injected.test": Behaviour("inject", (HOST,), forged=(FORGED_ADDRESS,)),
}
CONTROL_ZONE: dict[str, Behaviour] = {name: Behaviour("answer", (HOST,)) for name in NAMES}
# The throttled download's rate (bytes per second), and a page as big as it served at once.
THROTTLED = 24576
FRONT_PAGE = "<!doctype html><title>News</title>" + "<p>Today's news.</p>" * 1700
_S = TypeVar("_S", DnsServer, DohServer, HttpServer, SniFilter)


@dataclass
class DemoWorld:
    """The demo's servers; `start()` binds them all on ephemeral loopback ports."""

    directory: Path
    pki: Pki = field(init=False)
    dns: DnsServer = field(init=False)
    doh: DohServer = field(init=False)
    web: dict[str, HttpServer | SniFilter] = field(init=False, default_factory=dict)
    _running: list[DnsServer | DohServer | HttpServer | SniFilter] = field(
        init=False, default_factory=list
    )

    async def start(self) -> DemoWorld:
        """Create the PKI in `directory` and start every server; returns self."""
        self.pki = Pki(self.directory)
        tls = server_context(self.pki.issue(*NAMES, HOST))
        try:
            self.dns = await self._start(DnsServer(Zone(TEST_ZONE), HOST))
            self.doh = await self._start(DohServer(Zone(CONTROL_ZONE), tls, HOST))
            web = {
                "https": HttpServer("valid", HOST, ssl_context=tls),
                "blockpage": HttpServer("blockpage", HOST),
                "throttle": HttpServer("throttle", HOST, ssl_context=tls, rate=THROTTLED),
                "download": HttpServer("valid", HOST, ssl_context=tls, body=FRONT_PAGE),
            }
            for role, server in web.items():
                self.web[role] = await self._start(server)
            sni = SniFilter([SNI_BLOCKED], (HOST, self.web["https"].port), HOST)
            self.web["sni"] = await self._start(sni)
        except BaseException:
            await self.close()
            raise
        return self

    async def _start(self, server: _S) -> _S:
        await server.start()
        self._running.append(server)
        return server

    async def close(self) -> None:
        """Stop every server that started."""
        while self._running:
            await self._running.pop().close()

    def _url(self, role: str, name: str, path: str = "/") -> str:
        server = self.web[role]
        scheme = "https" if role in ("https", "throttle", "download", "sni") else "http"
        return f"{scheme}://{format_hostport(name, server.port)}{path}"

    def targets(self) -> list[dict[str, Any]]:
        """The demo's targets, in the order the page and table show them."""
        return [
            {"name": "news", "url": self._url("download", "news.test", "/front-page")},
            {"name": "messenger", "url": self._url("sni", SNI_BLOCKED)},
            {"name": "poisoned", "url": self._url("https", "poisoned.test")},
            {"name": "injected", "url": self._url("https", "injected.test")},
            {"name": "blocked-page", "url": self._url("blockpage", "blocked.test")},
            {"name": "ip-blocked", "tcp": format_hostport(HOST, closed_port(HOST))},
            {"name": "video", "url": self._url("throttle", "video.test", "/stream")},
            {"name": "canary", "group": "canary", "url": self._url("https", "canary.test")},
        ]

    def config(self, listen: str, interval: str = "30s") -> dict[str, Any]:
        """An agent config (as data) for the demo: only this world's servers, nothing else."""
        return {
            "agent": {
                "vantage": "demo",
                "role": "test",
                "timeout": "3s",
                "interval": interval,
                "jitter": "0s",
                "listen": listen,
            },
            "resolvers": {
                "test": {"type": "udp", "servers": [format_hostport(HOST, self.dns.port)]},
                "control": {"type": "doh", "url": self.doh.url},
                "bogon_exempt": [BOGON_EXEMPT],
                "injection_window": "300ms",
            },
            "tls": {"ca_file": str(self.pki.ca_file)},
            "targets": self.targets(),
            # The blockpage carries Roskomnadzor's registry link, as Russian ISPs' pages do.
            "blockpages": [{"name": "demo-isp", "pattern": r"eais\.rkn\.gov\.ru"}],
        }

    def write_config(self, path: Path, listen: str, interval: str = "30s") -> Path:
        """Write `config(listen, interval)` as YAML to `path`; returns `path`."""
        path.write_text(yaml.safe_dump(self.config(listen, interval), allow_unicode=True))
        return path
