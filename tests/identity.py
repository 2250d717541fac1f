"""What identifies a machine (its non-loopback addresses, MACs, hostname) and how to find it
in text: shared by the loopback identity test and the lab's."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SIOCGIFADDR = 0x8915
SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class Needle:
    """One identifying value and the pattern that finds it in any of its usual spellings."""

    kind: str
    value: str
    pattern: re.Pattern[str]


def _ipv4_addresses() -> set[str]:
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in os.listdir(SYS_NET):
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            found.add(socket.inet_ntoa(reply[20:24]))
    return found


def _ipv6_addresses() -> set[str]:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return set()
    return {str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))) for line in lines}


def _macs() -> set[str]:
    macs = set()
    for name in os.listdir(SYS_NET):
        try:
            macs.add((SYS_NET / name / "address").read_text().strip())
        except OSError:
            continue
    return macs


def address_needle(address: str) -> Needle | None:
    """A needle for an interface address; None for loopback addresses (not identifying)."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return None
    spellings = {str(ip), ip.exploded} if ip.version == 6 else {str(ip)}
    alternatives = "|".join(re.escape(s) for s in sorted(spellings))
    # Bounded so that a longer address or number containing this one does not match,
    # while "ip:port" and "[v6]:port" do.
    before, after = (
        (r"[\d.]", r"\d|\.\d") if ip.version == 4 else ("[0-9a-f:]", "[0-9a-f]|:[0-9a-f]")
    )
    pattern = re.compile(rf"(?<!{before})(?:{alternatives})(?!{after})", re.IGNORECASE)
    return Needle(f"IPv{ip.version} address", str(ip), pattern)


def mac_needle(mac: str) -> Needle | None:
    """A needle for a MAC address, spelled with colons, dashes or nothing; None if all zero."""
    mac = mac.lower()
    if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac) or mac == "00:00:00:00:00:00":
        return None
    pattern = r"(?<![0-9a-f])" + r"[:-]?".join(mac.split(":")) + r"(?![0-9a-f])"
    return Needle("MAC address", mac, re.compile(pattern, re.IGNORECASE))


def hostname_needle(hostname: str) -> Needle | None:
    """A needle for a hostname; None for an empty one or `localhost`."""
    if not hostname or hostname == "localhost":
        return None
    pattern = re.compile(rf"(?<![\w.-]){re.escape(hostname)}(?![\w-])", re.IGNORECASE)
    return Needle("hostname", hostname, pattern)


def machine_needles() -> list[Needle]:
    """This machine's identifying values: non-loopback addresses, MACs, hostname."""
    candidates = [
        *(address_needle(a) for a in sorted(_ipv4_addresses() | _ipv6_addresses())),
        *(mac_needle(m) for m in sorted(_macs())),
        hostname_needle(socket.gethostname()),
    ]
    return [n for n in candidates if n is not None]


def leaks(text: str, needles: list[Needle]) -> list[str]:
    """The needles found in `text`, each with its context."""
    found = []
    for needle in needles:
        for match in needle.pattern.finditer(text):
            context = text[max(0, match.start() - 60) : match.end() + 60]
            found.append(f"{needle.kind} {needle.value}: ...{context!r}...")
    return found
