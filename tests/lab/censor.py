"""Censorship scenarios, applied and removed on the censor router.

A `Scenario` is data: nftables rules for its own table (`inet rpl_<name>`), iptables rules
where nftables has no equivalent (string match for SNI filtering), a tc shaping policy, and
the lies of a DNS resolver run on the censor. `Censor.apply` is idempotent (it replaces the
scenario's previous state) and `Censor.remove` undoes exactly one scenario, so tests can
apply and remove rules around themselves while the lab keeps running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import netns, services, world
from tests.lab.procs import LabProcess

THROTTLE_CLASS = "1:20"
# How long the `residual` scenario silences an address (the wild's minute or more, shortened).
RESIDUAL_SECONDS = 6


@dataclass(frozen=True)
class Scenario:
    """One censorship policy.

    - `forward`: nft rules for a filter chain on the forward hook (packets the censor routes),
      at `forward_priority` (above 0: after iptables' FORWARD chain, which may mark packets);
    - `sets`: nft set declarations of the scenario's table (e.g. a dynamic set with a timeout);
    - `prerouting`: nft rules for a nat chain on the prerouting hook (DNAT, redirects);
    - `iptables`: rule specs for iptables' FORWARD chain (e.g. `-m string`, which nftables
      lacks);
    - `shape`: a rate (tc syntax, e.g. `256kbit`) and the source addresses whose traffic to the
      censored client it applies to;
    - `dns_lies`: simlab zone overrides for a lying resolver the censor runs and
      redirects the lab resolver's port 53 to (`"*"` stands for every name outside the zone);
    - `boxes`: `python -m simlab` arguments of servers the censor runs while the scenario is
      applied (e.g. the intercepting box a transparent proxy redirects to).
    """

    name: str
    description: str
    forward: tuple[str, ...] = ()
    forward_priority: int = 0
    sets: tuple[str, ...] = ()
    prerouting: tuple[str, ...] = ()
    iptables: tuple[tuple[str, ...], ...] = ()
    shape: tuple[str, tuple[str, ...]] | None = None
    dns_lies: Mapping[str, object] = field(default_factory=dict)
    boxes: tuple[tuple[str, ...], ...] = ()

    @property
    def table(self) -> str:
        """This scenario's nftables table (in family inet)."""
        return "rpl_" + self.name.replace("-", "_")

    def nft_script(self) -> str:
        """An nft script that atomically replaces the scenario's table with its rules."""
        # `table` then `delete table` makes the delete succeed whether or not it existed.
        lines = [f"table inet {self.table}", f"delete table inet {self.table}"]
        lines.append(f"table inet {self.table} {{")
        lines += [f"  {declaration}" for declaration in self.sets]
        if self.forward:
            lines.append(
                "  chain forward { type filter hook forward "
                f"priority {self.forward_priority}; policy accept;"
            )
            lines += [f"    {rule}" for rule in self.forward]
            lines.append("  }")
        if self.prerouting:
            lines.append(
                "  chain prerouting { type nat hook prerouting priority -100; policy accept;"
            )
            lines += [f"    {rule}" for rule in self.prerouting]
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"


# --- scenario builders ------------------------------------------------------------------------

# ICMP's unreachable kinds and their ICMPv6 counterparts (nft's names).
_ICMPV6_KINDS = {"host-unreachable": "addr-unreachable", "net-unreachable": "no-route"}


def _is_v6(destination: str) -> bool:
    # An IPv6 address or prefix, or an nft set of them: only IPv6 has colons.
    return ":" in destination


def _daddr(destination: str) -> str:
    """The nft match on `destination` (an address, a prefix or a set), in its family."""
    return f"{'ip6' if _is_v6(destination) else 'ip'} daddr {destination}"


def blackhole(name: str, destination: str) -> Scenario:
    """Drop every packet to `destination` (an address or a prefix, IPv4 or IPv6): SYNs go
    unanswered."""
    return Scenario(
        name,
        f"IP blackhole of {destination}",
        forward=(f"{_daddr(destination)} drop",),
    )


def tcp_reset(name: str, address: str, port: int) -> Scenario:
    """Answer SYNs to `address:port` (IPv4 or IPv6) with a RST.

    The client sees the RST in answer to its SYN, so connect() fails with ECONNREFUSED: the
    agent reports `tcp_refused`, not `tcp_reset` (that is a RST on an established connection).
    """
    return Scenario(
        name,
        f"RST injection on {address}:{port}",
        forward=(f"{_daddr(address)} tcp dport {port} reject with tcp reset",),
    )


def icmp_unreachable(name: str, address: str, kind: str) -> Scenario:
    """Answer packets to `address` with ICMP `kind` (`host-unreachable`, `net-unreachable`),
    or for an IPv6 address its ICMPv6 counterpart."""
    reject = f"icmpv6 type {_ICMPV6_KINDS[kind]}" if _is_v6(address) else f"icmp type {kind}"
    return Scenario(
        name,
        f"ICMP {kind} for {address}",
        forward=(f"{_daddr(address)} reject with {reject}",),
    )


# What a string-matching rule does to the packet it matches.
RESET = ("REJECT", "--reject-with", "tcp-reset")
DROP = ("DROP",)


def string_match(port: int, string: str, action: tuple[str, ...]) -> tuple[str, ...]:
    """An iptables FORWARD rule spec: TCP packets to `port` carrying `string` get `action`.

    nftables has no string match, hence iptables-nft's xt_string, as DPI boxes match strings.
    The TCP handshake carries no payload, so it passes; the first packet with the string (a
    ClientHello, an HTTP request) is the one stopped, and so is each retransmission of it.
    """
    return (
        "-p", "tcp", "--dport", str(port),
        "-m", "string", "--algo", "bm", "--string", string,
        "-j", *action,
    )  # fmt: skip


def udp_drop(name: str, address: str, port: int = 443) -> Scenario:
    """Drop every UDP datagram to `address:port`: QUIC is blocked, TCP on that port is not
    (how Russia and Iran have blocked QUIC on some networks)."""
    return Scenario(
        name,
        f"UDP {port} dropped to {address} (QUIC blocked)",
        forward=(f"{_daddr(address)} udp dport {port} drop",),
    )


# The first byte of a QUIC v1 long-header Initial packet: header form 1, fixed bit 1, packet
# type 00 (RFC 9000 section 17.2.2); the low four bits are protected, hence the mask. The
# version follows in the next four bytes. `@th,64` is the first byte after the UDP header.
QUIC_INITIAL_MATCH = "@th,64,8 & 0xf0 == 0xc0 @th,72,32 0x00000001"


def quic_initial_drop(name: str, address: str, port: int = 443) -> Scenario:
    """Drop only QUIC v1 Initial packets to `address:port`, matched in the UDP payload, as a
    DPI box does before it reads the SNI inside: every other datagram passes."""
    return Scenario(
        name,
        f"QUIC Initial packets dropped to {address}:{port}",
        forward=(f"{_daddr(address)} udp dport {port} {QUIC_INITIAL_MATCH} counter drop",),
    )


def sni_filter(
    name: str, server_name: str, port: int = 443, action: tuple[str, ...] = RESET
) -> Scenario:
    """Stop TLS connections whose ClientHello carries `server_name` (its SNI is in clear).

    With RESET the ClientHello is dropped and answered with a RST, so the client's handshake
    fails with a reset; with DROP it vanishes silently and the handshake times out.
    """
    how = "reset" if action == RESET else "dropped"
    spec = string_match(port, server_name, action)
    return Scenario(name, f"SNI filtering of {server_name} ({how})", iptables=(spec,))


# The packet mark by which iptables' string match tells the residual scenario's nft chain that
# a packet carried the blocked name.
RESIDUAL_MARK = "0x22"


def residual(name: str, server_name: str, seconds: int, port: int = 443) -> Scenario:
    """Residual blocking, as the GFW and Iran's censors do it: a ClientHello carrying
    `server_name` (matched by iptables, which marks it) is dropped and puts (client, server,
    port) in a dynamic nft set for `seconds`; while it is there every packet between that
    client and that server address and port is dropped both ways: new SYNs whatever name
    they will send, and connections already open."""
    mark = ("MARK", "--set-mark", RESIDUAL_MARK)
    flow = "ip saddr . ip daddr . tcp dport"
    return Scenario(
        name,
        f"residual blocking: {seconds}s of silence for the address after {server_name}",
        iptables=(string_match(port, server_name, mark),),
        sets=(
            "set residual { type ipv4_addr . ipv4_addr . inet_service; "
            f"flags dynamic, timeout; timeout {seconds}s; }}",
        ),
        forward_priority=10,
        forward=(
            f"meta mark {RESIDUAL_MARK} add @residual {{ {flow} }} drop",
            f"{flow} @residual drop",
            "ip daddr . ip saddr . tcp sport @residual drop",
        ),
    )


def http_reset(name: str, marker: str, port: int = 80) -> Scenario:
    """Reset plain-HTTP connections whose request carries `marker` (a Host header, a path).

    The TCP handshake passes; the request is dropped and answered with a RST, so the client
    reads a reset where the response should be. Other requests to the same address pass.
    """
    spec = string_match(port, marker, RESET)
    return Scenario(name, f"RST injection on HTTP requests carrying {marker!r}", iptables=(spec,))


def dns_poison(name: str, lies: Mapping[str, object], description: str = "") -> Scenario:
    """Redirect the lab resolver's port 53 to a resolver on the censor that lies for `lies`.

    `lies` maps a name to a simlab behaviour (`nxdomain`, an address list, an `inject`
    mapping); other names get the genuine answers. DoH (TCP 443) is not redirected, so a
    control resolver over DoH still gets the truth.
    """
    target = f"{world.CENSOR_ADDRESS}:53"
    return Scenario(
        name,
        description or f"DNS poisoning of {', '.join(lies)}",
        prerouting=(
            f"ip daddr {world.DNS_ADDRESS} udp dport 53 dnat ip to {target}",
            f"ip daddr {world.DNS_ADDRESS} tcp dport 53 dnat ip to {target}",
        ),
        dns_lies=dict(lies),
    )


def http_blockpage(name: str, address: str, port: int = 80) -> Scenario:
    """Send HTTP connections to `address` to the blockpage server instead (DNAT).

    The decision is made on the SYN, so it is per address: each lab host that gets a blockpage
    has an address of its own.
    """
    return Scenario(
        name,
        f"HTTP blockpage for {address}:{port}",
        prerouting=(
            f"ip daddr {address} tcp dport {port} dnat ip to {world.BLOCKPAGE_ADDRESS}:80",
        ),
    )


def throttle(name: str, address: str, rate: str) -> Scenario:
    """Shape traffic from `address` to the censored client to `rate` (tbf; no netem here)."""
    return Scenario(name, f"throttling {address} to {rate}", shape=(rate, (address,)))


def transparent_proxy(name: str) -> Scenario:
    """Redirect all of the censored client's TCP to an intercepting box on the censor.

    The box (`simlab intercept`) accepts every connection to any address and port, completes
    TLS with its own CA's certificate for whatever name was asked, serves a portal page to
    plain HTTP and stays silent to anything else, as a transparent proxy or a captive portal
    does.
    """
    host, port = world.INTERCEPT_LISTEN
    return Scenario(
        name,
        "transparent proxy: all TCP of the censored client to an intercepting box",
        prerouting=(f'iifname "{world.CENSOR_CLIENT_DEV}" meta l4proto tcp redirect to :{port}',),
        boxes=(("intercept", "--listen", f"{host}:{port}"),),
    )


def random_loss(name: str, client: str, probability: float) -> Scenario:
    """Drop each packet to or from `client` with `probability` (iptables `statistic`)."""
    match = ("-m", "statistic", "--mode", "random", "--probability", f"{probability:g}")
    return Scenario(
        name,
        f"{probability:.0%} random packet loss both ways for {client}",
        iptables=tuple((side, client, *match, "-j", "DROP") for side in ("-s", "-d")),
    )


def _every_name(behaviour: Callable[[list[str]], object]) -> dict[str, object]:
    """A lie for every name in the lab zone, made from its genuine addresses."""
    return {name: behaviour(addresses) for name, addresses in world.zone_records().items()}


# --- the lab's named scenarios ------------------------------------------------------------


def _address(key: str) -> str:
    return world.HOSTS[key].address


def _address6(key: str) -> str:
    address = world.HOSTS[key].address6
    assert address is not None, key
    return address


def _name(key: str) -> str:
    name = world.HOSTS[key].name
    assert name is not None, key
    return name


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        blackhole("blackhole", _address("blackhole")),
        tcp_reset("rst", _address("rst"), 443),
        icmp_unreachable("host-unreach", _address("host-unreach"), "host-unreachable"),
        icmp_unreachable("net-unreach", _address("net-unreach"), "net-unreachable"),
        sni_filter("sni", _name("sni-blocked")),
        sni_filter("sni-drop", _name("sni-dropped"), action=DROP),
        # Short, so that the test sees the block end by itself within seconds.
        residual("residual", _name("residual-blocked"), RESIDUAL_SECONDS),
        http_reset("http-rst", f"Host: {_name('http-rst')}"),
        dns_poison("dns-nxdomain", {_name("dns-nxdomain"): "nxdomain"}),
        # 10.10.34.35: a private address, as Russian ISPs' resolvers answer for blocked names.
        dns_poison("dns-bogon", {_name("dns-bogon"): ["10.10.34.35"]}),
        # A forged answer at once (the blockpage server's address), the genuine one 50ms later.
        dns_poison(
            "dns-injected",
            {
                _name("dns-injected"): {
                    "kind": "inject",
                    "addresses": [_address("dns-injected")],
                    "forged": [world.BLOCKPAGE_ADDRESS],
                    "delay": "50ms",
                }
            },
        ),
        http_blockpage("http-block", _address("http-block")),
        # The lie leads to a fingerprinted blockpage (over HTTP) and to a server whose
        # certificate is for its own name (over HTTPS), not to an unknown page.
        dns_poison(
            "dns-blockpage",
            {
                _name(key): [world.BLOCKPAGE_ADDRESS]
                for key in ("dns-blockpage", "dns-blockpage-tls")
            },
            f"DNS hijack to the blockpage server {world.BLOCKPAGE_ADDRESS}",
        ),
        # Slow enough to show in the TLS handshake (about 3.5 KB of certificates) and the page
        # (16 KB), fast enough for both to finish within the agent's 1s timeout.
        throttle("throttle", _address("throttle"), "384kbit"),
        # One family's path blocked, the other's fine: the target stays reachable, and the
        # report names the failed family.
        blackhole("ipv6-blackhole", _address6("dual-v6-blocked")),
        tcp_reset("ipv4-rst", _address("dual-v4-blocked"), 443),
        udp_drop("quic-udp", _address("quic-udp")),
        quic_initial_drop("quic-initial", _address("quic-initial")),
        blackhole("cloud-prefix", world.CLOUD_PREFIX),
        # The same cloud at /24 granularity: some of its /24s gone, the others untouched.
        blackhole("cloud-24s", "{ " + ", ".join(world.CLOUD_BLOCKED_24S) + " }"),
        # Collateral damage at scale: parts of a /16 gone, for the prefix sampling estimate.
        blackhole("prefix-sample", "{ " + ", ".join(world.SAMPLED_BLOCKED) + " }"),
        transparent_proxy("transparent-proxy"),
        dns_poison(
            "walled-garden",
            _every_name(lambda _: "nxdomain"),
            "walled garden: every name NXDOMAIN, canaries included",
        ),
        dns_poison(
            "nxdomain-hijack",
            {"*": [world.ISP_PAGE_ADDRESS]},
            f"NXDOMAIN hijacking: names outside the zone answer {world.ISP_PAGE_ADDRESS}",
        ),
        # The ISP's own page: no blockpage fingerprint knows it; only the comparison with the
        # page at the control resolver's address shows the hijack.
        dns_poison("http-hijack", {_name("http-hijack"): [world.ISP_PAGE_ADDRESS]}),
        random_loss("loss", world.CENSORED_CLIENT_ADDRESS, 0.05),
        dns_poison(
            "dns-tcp-only",
            _every_name(lambda addresses: {"kind": "truncate", "addresses": addresses}),
            "a resolver whose UDP answers are all truncated: answers need TCP",
        ),
    )
}


# Scenarios that change the whole censored vantage (its resolver, its path), not one target's.
VANTAGE_WIDE = ("transparent-proxy", "walled-garden", "nxdomain-hijack", "loss", "dns-tcp-only")


# --- applying them ----------------------------------------------------------------------------


class Censor:
    """The censor router's policy: which scenarios are applied, and applying them."""

    def __init__(self, ns: str, directory: Path) -> None:
        self.ns = ns
        self.directory = directory
        self.applied: dict[str, Scenario] = {}
        self._liar: LabProcess | None = None
        self._boxes: dict[str, list[LabProcess]] = {}

    def apply(self, scenario: Scenario, ready_timeout: float = 10.0) -> None:
        """Apply `scenario` (replacing its earlier state, if any)."""
        self.remove(scenario)
        self.applied[scenario.name] = scenario
        if scenario.dns_lies:
            self._start_liar(scenario, time.monotonic() + ready_timeout)
        if scenario.boxes:
            self._start_boxes(scenario, time.monotonic() + ready_timeout)
        if scenario.forward or scenario.prerouting:
            netns.run(["nft", "-f", "-"], ns=self.ns, input=scenario.nft_script())
        if scenario.prerouting:
            self._forget_flows()
        for spec in scenario.iptables:
            netns.run(["iptables", "-A", "FORWARD", *spec], ns=self.ns)
        if scenario.shape:
            self._shape(*scenario.shape)

    def remove(self, scenario: Scenario) -> None:
        """Undo `scenario`; absent parts are fine."""
        self.applied.pop(scenario.name, None)
        script = f"table inet {scenario.table}\ndelete table inet {scenario.table}\n"
        netns.run(["nft", "-f", "-"], ns=self.ns, input=script)
        for spec in scenario.iptables:
            # -D removes one copy per call; bounded by a generous count.
            for _ in range(16):
                try:
                    netns.run(["iptables", "-D", "FORWARD", *spec], ns=self.ns)
                except netns.CommandError:
                    break
        if scenario.prerouting:
            self._forget_flows()
        if scenario.shape:
            self._unshape()
        if scenario.dns_lies:
            self._stop_liar()
        for box in self._boxes.pop(scenario.name, []):
            box.stop()

    def clear(self) -> None:
        """Remove every scenario, including ones a crashed run may have left."""
        self.applied.clear()
        netns.run(["nft", "flush", "ruleset"], ns=self.ns)
        self._forget_flows()
        self._unshape()
        self._stop_liar()
        for boxes in self._boxes.values():
            for box in boxes:
                box.stop()
        self._boxes.clear()

    @contextlib.contextmanager
    def scenario(self, scenario: Scenario) -> Iterator[Scenario]:
        """Apply `scenario` for the duration of a with-block."""
        self.apply(scenario)
        try:
            yield scenario
        finally:
            self.remove(scenario)

    def _forget_flows(self) -> None:
        # NAT is decided on a flow's first packet: a flow the censor already tracks (a DNS
        # query's source port reused within conntrack's 30s, an open connection) would keep
        # its old destination, so a new redirect would miss it and a removed one would still
        # send it to a stopped box. Flows that were not NATed are picked up again at once
        # (nf_conntrack_tcp_loose), so forgetting them all only costs in-flight NATed ones.
        netns.run(["conntrack", "--flush"], ns=self.ns)

    def _shape(self, rate: str, sources: tuple[str, ...]) -> None:
        # An htb root (the only classful qdisc besides it here is none: no prio, no netem)
        # with one class that a filter sends the throttled sources' packets to; unclassified
        # traffic bypasses htb unshaped. The class holds a tbf that does the metering: the
        # veth hands over GSO super-packets, which tbf cuts into MTU-sized segments and htb
        # alone would let through whole whenever it has any tokens.
        dev, cls = world.CENSOR_CLIENT_DEV, THROTTLE_CLASS
        commands = [
            f"qdisc replace dev {dev} root handle 1: htb",
            f"class add dev {dev} parent 1: classid {cls} htb rate 10gbit",
            f"qdisc add dev {dev} parent {cls} handle 20: tbf rate {rate} burst 1600 latency 2s",
        ]
        commands += [
            f"filter add dev {dev} parent 1: protocol ip u32 match ip src {src}/32 flowid {cls}"
            for src in sources
        ]
        for command in commands:
            netns.run(["tc", *command.split()], ns=self.ns)

    def _unshape(self) -> None:
        with contextlib.suppress(netns.CommandError):
            netns.run(["tc", "qdisc", "del", "dev", world.CENSOR_CLIENT_DEV, "root"], ns=self.ns)

    def _start_liar(self, scenario: Scenario, deadline: float) -> None:
        zone = services.write_zone(self.directory / "censor-zone.yaml", scenario.dns_lies)
        spec = services.ServerSpec(
            "censor-dns",
            world.CENSOR,
            ("dns", "--listen", f"{world.CENSOR_ADDRESS}:53", "--zone", str(zone)),
        )
        self._liar = services.start_server(spec, self.ns, self.directory)
        services.wait_ready([self._liar], deadline)

    def _start_boxes(self, scenario: Scenario, deadline: float) -> None:
        specs = [
            services.ServerSpec(f"censor-{scenario.name}-{i}", world.CENSOR, args)
            for i, args in enumerate(scenario.boxes)
        ]
        boxes = [services.start_server(spec, self.ns, self.directory) for spec in specs]
        self._boxes[scenario.name] = boxes
        services.wait_ready(boxes, deadline)

    def _stop_liar(self) -> None:
        if self._liar is not None:
            self._liar.stop()
            self._liar = None
