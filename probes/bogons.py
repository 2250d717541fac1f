"""Bogon addresses: answers no public name should resolve to.

The list follows OONI's bogon list (RFC 1918, shared address space, loopback, link-local,
TEST-NETs, benchmarking, multicast, reserved and the IPv6 equivalents). An answer in one of
these ranges is a `dns_bogon` and is never connected to, unless an operator exempts its range.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BOGON_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/127",
        "100::/64",
        "2001:10::/28",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


def _normalise(ip: IPAddress) -> IPAddress:
    # An IPv4-mapped IPv6 answer (::ffff:10.0.0.1) is as much a bogon as its IPv4 form.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class BogonFilter:
    """Decides whether an address is a bogon, given the operator's exempt ranges."""

    def __init__(self, exempt: Iterable[str | IPNetwork] = ()) -> None:
        self.exempt: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in exempt)

    def is_bogon(self, address: str | IPAddress) -> bool:
        """True if `address` is in a bogon range and not in an exempt one."""
        raw = ipaddress.ip_address(address) if isinstance(address, str) else address
        ip = _normalise(raw)
        # An exemption may be written in either form of a v4-mapped address.
        if any(a in net for a in (raw, ip) for net in self.exempt if net.version == a.version):
            return False
        return any(ip in net for net in BOGON_NETWORKS if net.version == ip.version)
