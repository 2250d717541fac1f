"""Command line: run one test server until SIGTERM/SIGINT, or write test certificates.

    python -m simlab dns --listen 198.18.0.53:53 --zone zone.yaml
    python -m simlab doh --listen 198.18.0.54:443 --zone zone.yaml --cert C --key K
    python -m simlab web --listen 198.18.0.80:443 --mode valid --cert C --key K
    python -m simlab web --listen 198.18.0.81:443 --mode reset
    python -m simlab mtproto --listen 198.18.2.20:443
    python -m simlab intercept --listen 198.19.1.1:8443
    python -m simlab h3 --listen 198.18.0.80:443 --cert C --key K
    python -m simlab udp --listen 198.18.0.81:443 --mode garbage
    python -m simlab certs --dir DIR --stem web --name web.test --name 198.18.0.80
    python -m simlab closed-port --host 127.0.0.1

A server prints one line `ready <kind> <url-or-addr>` on stdout once it accepts traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Protocol

from simlab.certs import Pki, server_context_from_files
from simlab.dns import DnsServer
from simlab.doh import DohServer
from simlab.intercept import InterceptServer
from simlab.mtproto import MtprotoServer
from simlab.net import closed_port, format_hostport, parse_listen
from simlab.quic import UDP_MODES, H3Server, UdpServer
from simlab.tcp import HANDSHAKE_FAILURE
from simlab.web import FINAL_PATH, MODES, VALID_BODY, HttpServer, start_web
from simlab.zone import Zone


class _Closable(Protocol):
    async def close(self) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m simlab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="kind", required=True)

    dns = sub.add_parser("dns", help="authoritative DNS over UDP and TCP")
    dns.add_argument("--listen", required=True, help="ADDR:PORT (UDP and TCP)")
    dns.add_argument("--zone", required=True, type=Path, help="YAML: name -> behaviour")

    doh = sub.add_parser("doh", help="DNS over HTTPS (RFC 8484)")
    doh.add_argument("--listen", required=True, help="ADDR:PORT")
    doh.add_argument("--zone", required=True, type=Path)
    _add_tls_options(doh)
    doh.add_argument("--path", default="/dns-query")

    web = sub.add_parser("web", help="HTTP(S) or misbehaving TCP server")
    web.add_argument("--listen", required=True, help="ADDR:PORT")
    web.add_argument("--mode", required=True, choices=MODES)
    _add_tls_options(web)
    web.add_argument("--body", default=VALID_BODY, help="body of the valid page")
    web.add_argument("--status", type=int, default=503, help="code of the status mode")
    web.add_argument("--location", default=FINAL_PATH, help="target of the redirect mode")
    web.add_argument("--alert", type=int, default=HANDSHAKE_FAILURE, help="TLS alert number")

    mtproto = sub.add_parser("mtproto", help="fake Telegram DC: answers req_pq_multi")
    mtproto.add_argument("--listen", required=True, help="ADDR:PORT")

    intercept = sub.add_parser(
        "intercept", help="accept all TCP: TLS with its own CA, a portal page, else silence"
    )
    intercept.add_argument("--listen", required=True, help="ADDR:PORT")

    h3 = sub.add_parser("h3", help="HTTP/3 over QUIC (UDP): the valid page to every GET")
    h3.add_argument("--listen", required=True, help="ADDR:PORT (UDP)")
    h3.add_argument("--cert", required=True, type=Path, help="PEM chain")
    h3.add_argument("--key", required=True, type=Path, help="PEM private key")
    h3.add_argument("--body", default=VALID_BODY, help="body of the page")

    udp = sub.add_parser("udp", help="a misbehaving UDP server (silent, garbage, version)")
    udp.add_argument("--listen", required=True, help="ADDR:PORT (UDP)")
    udp.add_argument("--mode", required=True, choices=UDP_MODES)

    certs = sub.add_parser("certs", help="write CA files and a leaf certificate")
    certs.add_argument("--dir", required=True, type=Path, help="reuses the CAs found there")
    certs.add_argument("--stem", default="server", help="leaf files: STEM.pem, STEM-key.pem")
    certs.add_argument("--name", action="append", default=[], help="DNS name or IP (repeat)")
    certs.add_argument("--untrusted", action="store_true", help="issue from the untrusted CA")

    closed = sub.add_parser("closed-port", help="print a TCP port nothing listens on")
    closed.add_argument("--host", default="127.0.0.1")
    return parser


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert", type=Path, help="PEM chain; with --key, serve TLS")
    parser.add_argument("--key", type=Path, help="PEM private key")


async def _start(args: argparse.Namespace) -> tuple[_Closable, str]:
    """Start the server the arguments describe; return it and its ready-line address."""
    host, port = parse_listen(args.listen)
    cert = getattr(args, "cert", None)
    if args.kind in ("h3", "udp"):
        quic_server: H3Server | UdpServer
        if args.kind == "h3":
            quic_server = H3Server(cert, args.key, host, port, body=args.body)
        else:
            quic_server = UdpServer(args.mode, host, port)
        await quic_server.start()
        return quic_server, format_hostport(host, quic_server.port)
    ssl_context = server_context_from_files(cert, args.key) if cert else None
    if args.kind == "dns":
        dns_server = await DnsServer(Zone.load(args.zone), host, port).start()
        return dns_server, format_hostport(host, dns_server.port)
    if args.kind == "doh":
        doh_server = DohServer(Zone.load(args.zone), ssl_context, host, port, args.path)
        await doh_server.start()
        return doh_server, doh_server.url
    if args.kind in ("mtproto", "intercept"):
        kind = MtprotoServer if args.kind == "mtproto" else InterceptServer
        box = await kind(host, port).start()
        return box, format_hostport(host, box.port)
    server = await start_web(
        args.mode,
        host,
        port,
        ssl_context,
        body=args.body,
        status=args.status,
        location=args.location,
        alert=args.alert,
    )
    where = server.url() if isinstance(server, HttpServer) else format_hostport(host, server.port)
    return server, where


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, where = await _start(args)
    mode = [args.mode] if args.kind in ("web", "udp") else []
    print(" ".join(["ready", args.kind, *mode, where]), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def _write_certs(args: argparse.Namespace) -> None:
    pki = Pki(args.dir)
    if args.name:
        cert, key = pki.issue_files(args.stem, *args.name, trusted=not args.untrusted)
        print(f"wrote {cert} {key}")
    print(f"ca {pki.ca_file}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.kind == "certs":
        _write_certs(args)
    elif args.kind == "closed-port":
        print(closed_port(args.host))
    else:
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
