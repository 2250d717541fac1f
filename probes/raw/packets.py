"""Building and reading packets with scapy, and the payloads that trigger a censor."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl

# scapy logs about absent optional backends on import; nothing we use needs them.
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from probes.browser import request_headers  # noqa: E402
from probes.raw.results import PacketEvidence  # noqa: E402

ICMP_ECHO_REPLY = 0
ICMP_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11


def check_ipv4(address: str) -> str:
    """`address` if it is an IPv4 address, else ValueError (the raw probes are IPv4 only)."""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"raw probes need an IPv4 address, got {address!r}") from None
    return address


def local_address(destination: str) -> str:
    """The source address the kernel would use towards `destination` (sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 9))
        return sock.getsockname()[0]


def parse(data: bytes) -> IP:
    """A received IPv4 packet (header included, as raw sockets deliver it)."""
    return IP(data)


def syn_segment(sport: int, dport: int, seq: int) -> TCP:
    """The TCP header of every SYN the raw probes send (a common client's window and MSS)."""
    return TCP(sport=sport, dport=dport, flags="S", seq=seq, window=64240, options=[("MSS", 1460)])


def syn(source: str, destination: str, sport: int, dport: int, ttl: int, seq: int) -> bytes:
    """A TCP SYN with the given TTL, for a raw IPPROTO_RAW socket."""
    return bytes(IP(src=source, dst=destination, ttl=ttl) / syn_segment(sport, dport, seq))


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (the kernel adds the IP header on a raw ICMP socket)."""
    return bytes(ICMP(type=ICMP_ECHO_REQUEST, id=ident, seq=seq) / Raw(payload))


def client_hello(server_name: str) -> bytes:
    """The first flight of a TLS handshake (the ClientHello) carrying `server_name` as SNI.

    Made by the ssl module itself, so it looks like what the TLS probe sends.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def http_request(host: str, path: str = "/") -> bytes:
    """The HTTP step's own GET (probes.browser), carrying `host` in its Host header."""
    head = "".join(f"{name}: {value}\r\n" for name, value in request_headers(host))
    return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode()


def evidence(packet: IP) -> PacketEvidence:
    """The header facts of `packet` that fingerprint its sender."""
    if TCP in packet:
        tcp = packet[TCP]
        return PacketEvidence(packet.ttl, packet.id, tcp.window, str(tcp.flags))
    return PacketEvidence(packet.ttl, packet.id)


def quoted_tcp(packet: IP) -> tuple[str, int, int] | None:
    """For an ICMP error quoting a TCP segment: (quoted destination, sport, dport)."""
    if ICMP not in packet or IPerror not in packet or TCPerror not in packet:
        return None
    return packet[IPerror].dst, packet[TCPerror].sport, packet[TCPerror].dport


def icmp_error_for(packet: IP, address: str, port: int, sport: int) -> bool:
    """True for an ICMP time-exceeded or unreachable quoting our segment sport -> address:port."""
    if icmp_type(packet) not in (ICMP_TIME_EXCEEDED, ICMP_UNREACHABLE):
        return False
    return quoted_tcp(packet) == (address, sport, port)


def icmp_type(packet: IP) -> int | None:
    """The ICMP type of `packet`, or None if it is not ICMP."""
    return packet[ICMP].type if ICMP in packet else None


def tcp_ports(packet: IP) -> tuple[int, int] | None:
    """(sport, dport) of a TCP packet (not of a quoted one), or None."""
    if packet.proto != socket.IPPROTO_TCP or TCP not in packet:
        return None
    return packet[TCP].sport, packet[TCP].dport


def from_endpoint(packet: IP, address: str, port: int, to_port: int) -> bool:
    """True for a TCP packet from `address:port` to our port `to_port`."""
    return packet.src == address and tcp_ports(packet) == (port, to_port)


def tcp_flags(packet: IP) -> str:
    """scapy's spelling of the TCP flags ("SA", "R", "RA", ...)."""
    return str(packet[TCP].flags)


def udp_payload(packet: IP, sport: int, dport: int) -> bytes | None:
    """The payload of a UDP datagram from port `sport` to port `dport`, else None."""
    if packet.proto != socket.IPPROTO_UDP or UDP not in packet:
        return None
    udp = packet[UDP]
    if udp.sport != sport or udp.dport != dport:
        return None
    return bytes(udp.payload)


def echo_reply_ids(packet: IP) -> tuple[int, int] | None:
    """(id, seq) of an ICMP echo reply, else None."""
    if packet.proto != socket.IPPROTO_ICMP or icmp_type(packet) != ICMP_ECHO_REPLY:
        return None
    return packet[ICMP].id, packet[ICMP].seq
