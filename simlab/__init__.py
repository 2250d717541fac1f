"""Real loopback/lab test servers: DNS, DoH, HTTP(S), misbehaving TCP, a fake Telegram DC and
an intercepting proxy's box, plus a test PKI.

Usable in-process (`await start_dns(...)` etc., or from sync code via `BackgroundLoop`) and as
a CLI (`python -m simlab --help`) for the network-namespace lab.
"""

from simlab.background import BackgroundLoop
from simlab.certs import (
    Pki,
    client_context,
    load_or_create_ca,
    server_context,
    server_context_from_files,
    write_leaf,
)
from simlab.dns import DnsServer, start_dns
from simlab.doh import DohServer, start_doh
from simlab.intercept import PORTAL_BODY, InterceptServer, start_intercept
from simlab.mtproto import MtprotoServer, start_mtproto
from simlab.net import closed_port, parse_listen
from simlab.tcp import RAW_MODES, Blackhole, RawServer, alert_record, start_raw
from simlab.web import (
    BLOCKPAGE_BODY,
    HTTP_MODES,
    ISP_BODY,
    MODES,
    VALID_BODY,
    HttpServer,
    start_web,
)
from simlab.zone import Behaviour, Zone

__all__ = [
    "BLOCKPAGE_BODY",
    "HTTP_MODES",
    "ISP_BODY",
    "MODES",
    "PORTAL_BODY",
    "RAW_MODES",
    "VALID_BODY",
    "BackgroundLoop",
    "Behaviour",
    "Blackhole",
    "DnsServer",
    "DohServer",
    "HttpServer",
    "InterceptServer",
    "MtprotoServer",
    "Pki",
    "RawServer",
    "Zone",
    "alert_record",
    "client_context",
    "closed_port",
    "load_or_create_ca",
    "parse_listen",
    "server_context",
    "server_context_from_files",
    "start_dns",
    "start_doh",
    "start_intercept",
    "start_mtproto",
    "start_raw",
    "start_web",
    "write_leaf",
]
