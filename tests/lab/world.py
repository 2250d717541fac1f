r"""What the lab's small internet contains: its namespaces, links, addresses, names and targets.

Every address is in 198.18.0.0/15 (RFC 2544 benchmarking space), which the host never uses:

    censored --- censor ---+
                           core --- infra  198.18.0.53 DNS, 198.18.0.54 DoH, 198.18.2.10 blockpage
    control  --------------+   \--- web    198.18.1.0/24, one host per scenario
                               \--- cloud  198.18.16.0/20, "telegram" and collateral services
    mon (Prometheus) --- management links to censored and control (bypassing the censor)

plus, for prefix sampling, the /16 10.77.0.0/16 held on the cloud namespace's lo and answered
by one responder: private space, so that no lab host and no other scenario shares it.

No namespace has a default route: a lab process that tries any address outside 198.18.0.0/15
and that /16 gets "network unreachable" at once instead of reaching the host's network.

The lab is dual-stack on the paths the dual-stack hosts need: IPv6 in 2001:db8::/32 (RFC 3849
documentation space, never routed) on the links censored-censor-core, control-core and
web-core, with routes to 2001:db8::/32 only (no IPv6 default route either). Only the
`dual-*` hosts have an IPv6 address (a /128 on the web namespace's lo) and an AAAA record:
the IPv4-only hosts keep their single address, so that an IPv4 rule still blocks them whole.
Lab devices skip duplicate address detection and ignore router advertisements, so every
address is usable at once and no route appears that the lab did not add.
"""

from __future__ import annotations

from dataclasses import dataclass

# Namespace roles; the namespace name is the lab prefix + role (e.g. `rpl-censored`).
CENSORED = "censored"
CONTROL = "control"
CENSOR = "censor"
CORE = "core"
INFRA = "infra"
WEB = "web"
CLOUD = "cloud"
MON = "mon"
ROLES = (CENSORED, CONTROL, CENSOR, CORE, INFRA, WEB, CLOUD, MON)
ROUTERS = (CENSOR, CORE)

LAB_NET = "198.18.0.0/15"

# Prefix sampling (docs/prefixes.md): a whole /16, every address local to the cloud namespace,
# where one responder listens on SAMPLED_PORT on the wildcard address.
SAMPLED_PREFIX = "10.77.0.0/16"
SAMPLED_PORT = 8443
# What the `prefix-sample` scenario blackholes: a /20 and five /24s, disjoint, none holding the
# /16's network or broadcast address (those are never sampled), 5,376 addresses in all.
SAMPLED_BLOCKED = (
    "10.77.64.0/20",
    "10.77.3.0/24",
    "10.77.17.0/24",
    "10.77.130.0/24",
    "10.77.200.0/24",
    "10.77.251.0/24",
)
LAB_NET6 = "2001:db8::/32"
# The dual-stack hosts' IPv6 addresses (on the web namespace's lo).
WEB_NET6 = "2001:db8:18:1::/64"
# Every destination a lab route may point at.
LAB_NETS = (LAB_NET, SAMPLED_PREFIX, LAB_NET6)


@dataclass(frozen=True)
class Link:
    """A veth pair: device `a_dev` with `a_addr` in `a`, `b_dev` with `b_addr` in `b`; on
    the dual-stack paths each end also has an IPv6 address (`a_addr6`, `b_addr6`)."""

    a: str
    a_dev: str
    a_addr: str
    b: str
    b_dev: str
    b_addr: str
    a_addr6: str | None = None
    b_addr6: str | None = None

    def addresses(self) -> list[tuple[str, str, str]]:
        """(namespace role, device, address/prefix) of every address on the link."""
        ends = ((self.a, self.a_dev, self.a_addr, self.a_addr6),
                (self.b, self.b_dev, self.b_addr, self.b_addr6))  # fmt: skip
        return [(ns, dev, cidr) for ns, dev, *cidrs in ends for cidr in cidrs if cidr]


def _v6(n: int) -> tuple[str, str]:
    """The two ends' addresses of IPv6 transfer link `n` (2001:db8:19:n::/64): a ::2, b ::1."""
    return (f"2001:db8:19:{n}::2/64", f"2001:db8:19:{n}::1/64")


LINKS = (
    # The censored client's only way out is through the censor.
    Link(CENSORED, "wan0", "198.19.1.2/30", CENSOR, "lan0", "198.19.1.1/30", *_v6(1)),
    Link(CENSOR, "wan0", "198.19.1.6/30", CORE, "censor0", "198.19.1.5/30", *_v6(2)),
    # The control client reaches the core directly.
    Link(CONTROL, "wan0", "198.19.2.2/30", CORE, "control0", "198.19.2.1/30", *_v6(3)),
    Link(INFRA, "wan0", "198.19.3.2/30", CORE, "infra0", "198.19.3.1/30"),
    Link(WEB, "wan0", "198.19.3.6/30", CORE, "web0", "198.19.3.5/30", *_v6(4)),
    Link(CLOUD, "wan0", "198.19.3.10/30", CORE, "cloud0", "198.19.3.9/30"),
    # Management: Prometheus scrapes the agents without crossing the censor, as an operator's
    # Prometheus outside the censored network would.
    Link(MON, "censored0", "198.19.254.1/30", CENSORED, "mgmt0", "198.19.254.2/30"),
    Link(MON, "control0", "198.19.254.5/30", CONTROL, "mgmt0", "198.19.254.6/30"),
)

# Addresses hosted on `lo` of the server namespaces. A prefix makes every address in it local.
LOCAL_PREFIXES = {
    INFRA: (
        "198.18.0.53/32",
        "198.18.0.54/32",
        "198.18.2.10/32",
        "198.18.2.11/32",  # the ISP's own page (NXDOMAIN and plain-HTTP hijacks)
        "198.18.2.20/32",  # a fake Telegram DC
    ),
    WEB: ("198.18.1.0/24",),
    CLOUD: ("198.18.16.0/20", SAMPLED_PREFIX),
}

ROUTES = (
    (CENSORED, LAB_NET, "198.19.1.1"),
    (CONTROL, LAB_NET, "198.19.2.1"),
    (CENSOR, LAB_NET, "198.19.1.5"),
    (CORE, "198.19.1.0/30", "198.19.1.6"),
    (CORE, "198.18.0.0/24", "198.19.3.2"),
    (CORE, "198.18.2.0/24", "198.19.3.2"),
    (CORE, "198.18.1.0/24", "198.19.3.6"),
    (CORE, "198.18.16.0/20", "198.19.3.10"),
    # Routed to a namespace that does not forward and holds no address in it: packets to the
    # sink vanish without an answer (no ICMP), as at an address nobody uses.
    (CORE, "198.18.3.0/24", "198.19.3.6"),
    (INFRA, LAB_NET, "198.19.3.1"),
    (WEB, LAB_NET, "198.19.3.5"),
    (CLOUD, LAB_NET, "198.19.3.9"),
    # The sampled /16: the censored client through the censor, the control client direct.
    (CENSORED, SAMPLED_PREFIX, "198.19.1.1"),
    (CONTROL, SAMPLED_PREFIX, "198.19.2.1"),
    (CENSOR, SAMPLED_PREFIX, "198.19.1.5"),
    (CORE, SAMPLED_PREFIX, "198.19.3.10"),
    # IPv6, for the dual-stack hosts: the clients and the censor up to the core, the core to
    # the censored client's link and the web namespace, the web namespace back.
    (CENSORED, LAB_NET6, "2001:db8:19:1::1"),
    (CENSOR, LAB_NET6, "2001:db8:19:2::1"),
    (CONTROL, LAB_NET6, "2001:db8:19:3::1"),
    (CORE, "2001:db8:19:1::/64", "2001:db8:19:2::2"),
    (CORE, WEB_NET6, "2001:db8:19:4::2"),
    (WEB, LAB_NET6, "2001:db8:19:4::1"),
)

# The censor's device facing the censored client: where tc shapes server-to-client traffic.
CENSOR_CLIENT_DEV = "lan0"
CENSOR_ADDRESS = "198.19.1.1"
CENSORED_CLIENT_ADDRESS = "198.19.1.2"

DNS_ADDRESS = "198.18.0.53"
DOH_ADDRESS = "198.18.0.54"
BLOCKPAGE_ADDRESS = "198.18.2.10"
CLOUD_PREFIX = "198.18.16.0/20"
# What the `cloud-24s` scenario blackholes: the /24s of "telegram" and one neighbour, not the
# /24s of the other cloud targets.
CLOUD_BLOCKED_24S = ("198.18.16.0/24", "198.18.27.0/24")
ISP_PAGE_ADDRESS = "198.18.2.11"
DC_ADDRESS = "198.18.2.20"
# The agent's never-answering address (`vantage.tcp_canary`): in the silent sink above, so a
# connect to it times out unless a box on the path accepts every connection.
TCP_CANARY = "198.18.3.1:443"
# Where a transparent proxy on the censor receives all of the censored client's TCP.
INTERCEPT_LISTEN = (CENSOR_ADDRESS, 8443)

PROMETHEUS_LISTEN = ("198.19.254.1", 9090)
AGENT_LISTEN = {CENSORED: ("198.19.254.2", 9787), CONTROL: ("198.19.254.6", 9787)}

ZONE = "lab.test"
# The agent resolves a random name under it each cycle (`vantage.nxdomain_probe_suffix`); the
# lab zone has no such names, so an address back means the resolver hijacks NXDOMAIN.
NXDOMAIN_PROBE_SUFFIX = f"nxprobe.{ZONE}"


@dataclass(frozen=True)
class Host:
    """A lab service: a DNS name (or None for a bare ip:port target) at one address, and
    for a dual-stack host an IPv6 one (`address6`, its AAAA record)."""

    name: str | None
    address: str
    ns: str
    address6: str | None = None

    @property
    def addresses(self) -> list[str]:
        """Every address of the host, IPv4 first."""
        return [self.address, *([self.address6] if self.address6 else [])]


def _web(label: str, last_octet: int) -> Host:
    return Host(f"{label}.{ZONE}", f"198.18.1.{last_octet}", WEB)


def _dual(label: str, last_octet: int) -> Host:
    """A dual-stack web host: 198.18.1.N and 2001:db8:18:1::N."""
    return Host(f"{label}.{ZONE}", f"198.18.1.{last_octet}", WEB, f"2001:db8:18:1::{last_octet}")


# One web host per scenario, so that each scenario's rule touches only its own target and the
# dominant-failure rule of one scenario never sees another's failures.
HOSTS = {
    "baseline": _web("baseline", 10),
    "blackhole": _web("blackhole", 11),
    "rst": _web("rst", 12),
    "host-unreach": _web("host-unreach", 13),
    "net-unreach": _web("net-unreach", 14),
    "sni-blocked": _web("sni-blocked", 15),
    "sni-innocent": _web("sni-innocent", 15),  # same address, another name
    "dns-nxdomain": _web("dns-nxdomain", 16),
    "dns-bogon": _web("dns-bogon", 17),
    "dns-injected": _web("dns-injected", 18),
    "http-block": _web("http-block", 19),
    "throttle": _web("throttle", 20),
    "http-hijack": _web("http-hijack", 21),
    "sni-dropped": _web("sni-dropped", 22),
    "http-rst": _web("http-rst", 23),
    "http-rst-innocent": _web("http-rst-innocent", 23),  # same address, another Host
    # Residual blocking: a ClientHello for the first silences the address for both.
    "residual-blocked": _web("residual-blocked", 26),
    "residual-innocent": _web("residual-innocent", 26),  # same address, another name
    # Two names the `dns-blockpage` resolver answers with the blockpage server's address.
    "dns-blockpage": _web("dns-blockpage", 24),
    "dns-blockpage-tls": _web("dns-blockpage-tls", 25),
    # HTTP/3 (the web namespace serves it on UDP 443 of these two): one whose UDP 443 the
    # `quic-udp` censor drops, one whose QUIC Initial alone `quic-initial` drops. Each is the
    # other's unblocked neighbour.
    "quic-udp": _web("quic-udp", 28),
    "quic-initial": _web("quic-initial", 29),
    # Dual-stack: one left alone, one whose IPv6 path and one whose IPv4 path is blocked.
    "dual-baseline": _dual("dual-baseline", 40),
    "dual-v6-blocked": _dual("dual-v6-blocked", 41),
    "dual-v4-blocked": _dual("dual-v4-blocked", 42),
    # The vantage's own connectivity: when every canary fails, the vantage is down.
    "canary-1": _web("canary-1", 30),
    "canary-2": _web("canary-2", 31),
    # Answers MTProto's req_pq_multi, as a Telegram DC does (the cloud's telegram-dc is a
    # TLS server that only accepts TCP).
    "lab-dc": Host(None, DC_ADDRESS, INFRA),
    # The 2018 case in small: a cloud prefix hosting "telegram" and unrelated services.
    "telegram-web": Host("web.telegram.test", "198.18.16.10", CLOUD),
    "telegram-dc": Host(None, "198.18.16.11", CLOUD),
    "twitch": Host("www.twitch.test", "198.18.18.20", CLOUD),
    "slack": Host("app.slack.test", "198.18.21.30", CLOUD),
    "spotify": Host("open.spotify.test", "198.18.27.40", CLOUD),
    "viber": Host("www.viber.test", "198.18.31.50", CLOUD),
}

CLOUD_TARGETS = ("telegram-web", "telegram-dc", "twitch", "slack", "spotify", "viber")
HTTP_TARGETS = ("http-block", "http-hijack", "http-rst", "http-rst-innocent", "dns-blockpage")
CANARY_GROUP = "canary"
# Targets with `http3: true` (a QUIC step beside their chain).
HTTP3_TARGETS = ("quic-udp", "quic-initial")
# `tcp:` targets that speak a protocol after connecting (the agent's `exchange` key).
EXCHANGES = {"lab-dc": "mtproto"}

# The HTTP page the web and cloud servers serve, padded so that a rate limit shows in the HTTP
# step's duration (throttling needs bytes to slow down).
PAGE_MARKER = "hello from the reachprobe lab"
PAGE_PADDING_BYTES = 16 * 1024
PAGE_BODY = (
    f"<!doctype html><title>lab</title><p>{PAGE_MARKER}</p>\n"
    + "<!-- "
    + "x" * PAGE_PADDING_BYTES
    + " -->\n"
)

# Real sites send 3-5 KB of certificates in the TLS handshake; a bare trustme leaf is 0.8 KB,
# which a rate limit's burst lets through untouched. Extra SANs bring the web hosts' chain to
# about 3.5 KB, so that throttling shows in the TLS step too.
CERT_FILLER_NAMES = tuple(f"mirror{i}.{ZONE}" for i in range(120))

BLOCKPAGE_PATTERN = r"rkn\.gov\.ru"


def target(key: str) -> dict[str, object]:
    """The agent config entry for HOSTS[key]; the target's name is the key."""
    host = HOSTS[key]
    group = "telegram" if key.startswith("telegram") else ("cloud" if host.ns == CLOUD else "lab")
    if key.startswith("canary-"):
        group = CANARY_GROUP
    if host.name is None:
        entry: dict[str, object] = {"name": key, "tcp": f"{host.address}:443", "group": group}
        if key in EXCHANGES:
            entry["exchange"] = EXCHANGES[key]
        return entry
    scheme = "http" if key in HTTP_TARGETS else "https"
    return {
        "name": key,
        "url": f"{scheme}://{host.name}/",
        "group": group,
        "expect_status": [200],
        "expect_body": PAGE_MARKER,
        **({"http3": True} if key in HTTP3_TARGETS else {}),
    }


def targets() -> list[dict[str, object]]:
    """Every lab target, for both agents' configs."""
    return [target(key) for key in HOSTS]


def zone_records() -> dict[str, list[str]]:
    """The lab zone for simlab' DNS and DoH servers: name -> addresses."""
    return {host.name: host.addresses for host in HOSTS.values() if host.name}


def local_addresses6(ns: str) -> list[str]:
    """The dual-stack hosts' IPv6 addresses served from namespace `ns`, as /128s for its lo
    (an IPv6 prefix on lo makes only its own address local, unlike IPv4's)."""
    return [f"{h.address6}/128" for h in HOSTS.values() if h.ns == ns and h.address6]


def names_in(ns: str) -> list[str]:
    """The DNS names served from namespace `ns` (for its TLS certificate)."""
    return sorted(h.name for h in HOSTS.values() if h.ns == ns and h.name)
