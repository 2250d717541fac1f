"""On-path injectors for the raw lab, run on a censor router (tests.lab.rawpath).

Each watches the packets arriving on the router's client-facing device through an AF_PACKET
socket (a tap, which sees them before the router's own netfilter and TTL check) and answers
a trigger with a forged packet in the server's name:

- `dns`: races the resolver with a forged A answer for one name, sent from the resolver's
  address (IP_TRANSPARENT lets a socket use an address that is not local). The query goes
  on, so the client gets the genuine answer too: two answers that differ in TTL.
- `blockpage`: answers an HTTP request carrying one Host with a forged response (a
  blockpage, with FIN) spoofed from the server, built by hand on a raw IPPROTO_RAW socket.
  The router drops the request itself (an nftables rule), as an in-path filter does.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct

import dns.exception
import dns.message
import dns.rrset

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
IP_TRANSPARENT = 19
TCP_PSH_ACK_FIN = 0x19
BLOCKPAGE_BODY = b"<html><body>Access restricted: rkn.gov.ru (raw lab)</body></html>\n"
BLOCKPAGE = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n"
    + f"Content-Length: {len(BLOCKPAGE_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + BLOCKPAGE_BODY
)


def forged_answer(query_wire: bytes, name: str, address: str) -> bytes | None:
    """An A answer with `address` if `query_wire` asks for `name`, else None."""
    try:
        query = dns.message.from_wire(query_wire)
    except dns.exception.DNSException:
        return None
    if not query.question or query.question[0].name.to_text().rstrip(".") != name:
        return None
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", address))
    return response.to_wire()


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forged_response(packet: bytes, host: str) -> bytes | None:
    """For a client's TCP segment carrying an HTTP request for `host`: the server's forged
    answer (IP header included), acknowledging the request and closing; else None."""
    header = (packet[0] & 0x0F) * 4
    if packet[9] != socket.IPPROTO_TCP or len(packet) < header + 20:
        return None
    sport, dport, seq, ack = struct.unpack("!HHII", packet[header : header + 12])
    payload = packet[header + (packet[header + 12] >> 4) * 4 :]
    if f"\r\nHost: {host}\r\n".encode() not in payload:
        return None
    client, server = packet[12:16], packet[16:20]
    tcp = struct.pack(
        "!HHIIBBHHH", dport, sport, ack, (seq + len(payload)) & 0xFFFFFFFF,
        5 << 4, TCP_PSH_ACK_FIN, 65535, 0, 0,
    )  # fmt: skip
    pseudo = server + client + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp) + len(BLOCKPAGE))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp + BLOCKPAGE)) + tcp[18:]
    total = 20 + len(tcp) + len(BLOCKPAGE)
    # The kernel fills in the IP checksum of an IP_HDRINCL packet.
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, random.getrandbits(16), 0x4000, 64,
        socket.IPPROTO_TCP, 0, server, client,
    )  # fmt: skip
    return ip + tcp + BLOCKPAGE


def serve(device: str, mode: str, name: str, address: str | None) -> None:
    """Inject until killed."""
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    tap.bind((device, ETH_P_IP))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    senders: dict[str, socket.socket] = {}
    print(f"ready injector {mode} {device} {name}", flush=True)
    while True:
        data, meta = tap.recvfrom(65535)
        if meta[2] == PACKET_OUTGOING or len(data) < 28:
            continue
        client = socket.inet_ntoa(data[12:16])
        if mode == "blockpage":
            forged = forged_response(data, name)
            if forged is not None:
                raw.sendto(forged, (client, 0))
            continue
        header = (data[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", data[header : header + 4])
        if data[9] != socket.IPPROTO_UDP or dport != 53:
            continue
        answer = forged_answer(data[header + 8 :], name, address or "")
        if answer is None:
            continue
        resolver = socket.inet_ntoa(data[16:20])
        sender = senders.get(resolver)
        if sender is None:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sender.bind((resolver, 53))
            senders[resolver] = sender
        sender.sendto(answer, (client, sport))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("mode", choices=("dns", "blockpage"))
    args.add_argument("--device", required=True)
    args.add_argument("--name", required=True, help="the censored DNS name or Host")
    args.add_argument("--address", help="dns: the forged A record")
    ns = args.parse_args()
    serve(ns.device, ns.mode, ns.name, ns.address)


if __name__ == "__main__":
    main()
