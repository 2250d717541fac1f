"""An on-path DNS injector for the raw lab, run on a censor router (tests.lab.rawpath).

It watches the queries a router forwards (an AF_PACKET socket on the client-facing device,
like a tap beside the router) and for the censored name races the resolver with a forged
answer, sent from the resolver's address (IP_TRANSPARENT lets a socket use an address that is
not local). The query itself goes on, so the client gets the genuine answer too, later: two
answers that differ in TTL, as the Great Firewall's do.
"""

from __future__ import annotations

import argparse
import socket
import struct

import dns.exception
import dns.message
import dns.rrset

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
IP_TRANSPARENT = 19


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


def serve(device: str, name: str, address: str) -> None:
    """Inject until killed."""
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    tap.bind((device, ETH_P_IP))
    senders: dict[str, socket.socket] = {}
    print(f"ready dns-injector {device} {name}", flush=True)
    while True:
        data, meta = tap.recvfrom(65535)
        if meta[2] == PACKET_OUTGOING or len(data) < 28 or data[9] != socket.IPPROTO_UDP:
            continue
        header = (data[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", data[header : header + 4])
        if dport != 53:
            continue
        answer = forged_answer(data[header + 8 :], name, address)
        if answer is None:
            continue
        client, resolver = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
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
    args.add_argument("--device", required=True)
    args.add_argument("--name", required=True)
    args.add_argument("--address", required=True, help="the forged A record")
    ns = args.parse_args()
    serve(ns.device, ns.name, ns.address)


if __name__ == "__main__":
    main()
