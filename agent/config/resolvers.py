"""`resolvers` and `tls`: which resolvers the DNS step asks, and extra trust anchors."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import model_validator

from agent.config.types import Duration, ExistingFile, Network, Strict, check_ip, split_host_port
from probes.dns import DEFAULT_PORTS, INJECTION_WINDOW, Resolver


class ResolverConfig(Strict):
    """One resolver: `system`, `udp`, `tcp` or `dot` with servers, or `doh` with a URL."""

    type: Literal["system", "udp", "tcp", "dot", "doh"]
    servers: list[str] = []
    url: str | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ResolverConfig:
        if self.type == "doh":
            if not self.url:
                raise ValueError("a doh resolver needs url (https://host/dns-query)")
            if urlsplit(self.url).scheme != "https" or not urlsplit(self.url).hostname:
                raise ValueError(f"url {self.url!r} is not an https:// URL")
            if self.servers:
                raise ValueError("a doh resolver takes url, not servers")
        elif self.type == "system":
            if self.servers or self.url:
                raise ValueError("the system resolver takes neither servers nor url")
        else:
            if not self.servers:
                raise ValueError(f"a {self.type} resolver needs servers (a list of ip or ip:port)")
            if self.url:
                raise ValueError(f"a {self.type} resolver takes servers, not url")
            for server in self.servers:
                check_ip(split_host_port(server, DEFAULT_PORTS[self.type])[0])
        if self.server_name and self.type != "dot":
            raise ValueError("server_name is only for dot resolvers")
        return self

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(ip, port) of every configured server."""
        port = DEFAULT_PORTS.get(self.type, 53)
        return tuple(split_host_port(s, port) for s in self.servers)

    def resolver(self) -> Resolver:
        """What the DNS step needs to ask this resolver."""
        return Resolver(self.type, self.endpoints(), self.url, self.server_name)


class ResolversSection(Strict):
    """The test resolver (what the vantage's users get) and an optional control resolver."""

    test: ResolverConfig = ResolverConfig(type="system")
    control: ResolverConfig | None = None
    bogon_exempt: list[Network] = []
    injection_window: Duration = INJECTION_WINDOW


class TlsSection(Strict):
    """Extra trust anchors for every TLS step, DoH and DoT included."""

    ca_file: ExistingFile | None = None
