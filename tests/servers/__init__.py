"""Real loopback/lab test servers: DNS, DoH, HTTP(S) and misbehaving TCP, plus a test PKI.

Usable in-process (`await start_dns(...)` etc., or from sync code via `BackgroundLoop`) and as
a CLI (`python -m tests.servers --help`) for the network-namespace lab.
"""

from tests.servers.background import BackgroundLoop
from tests.servers.certs import (
    Pki,
    client_context,
    load_or_create_ca,
    server_context,
    server_context_from_files,
    write_leaf,
)
from tests.servers.dns import DnsServer, start_dns
from tests.servers.doh import DohServer, start_doh
from tests.servers.net import closed_port, parse_listen
from tests.servers.tcp import RAW_MODES, RawServer, alert_record, start_raw
from tests.servers.web import (
    BLOCKPAGE_BODY,
    HTTP_MODES,
    MODES,
    VALID_BODY,
    HttpServer,
    start_web,
)
from tests.servers.zone import Behaviour, Zone

__all__ = [
    "BLOCKPAGE_BODY",
    "HTTP_MODES",
    "MODES",
    "RAW_MODES",
    "VALID_BODY",
    "BackgroundLoop",
    "Behaviour",
    "DnsServer",
    "DohServer",
    "HttpServer",
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
    "start_raw",
    "start_web",
    "write_leaf",
]
