"""Self-tests of the test servers: each behaves as it claims, checked with ordinary clients
(dnspython, ssl, aiohttp) over loopback."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simlab.background import BackgroundLoop
from simlab.certs import Pki, client_context, server_context_from_files
from simlab.loopback import (
    BOGON_ADDRESS,
    BOGON_EXEMPT,
    CONTROL_ONLY_ADDRESS,
    FORGED_ADDRESS,
    HOST,
    ISP_REDIRECT,
    LoopbackLab,
)
from simlab.net import closed_port, parse_listen
from simlab.web import BLOCKPAGE_BODY, VALID_BODY, HttpServer
from simlab.zone import Behaviour, Zone

REPO_ROOT = Path(__file__).resolve().parents[1]

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
DNS_MESSAGE = "application/dns-message"


def addresses(message: dns.message.Message) -> list[str]:
    """The A/AAAA addresses in a response's answer section."""
    return [r.address for rrset in message.answer for r in rrset]


# --- zone model -------------------------------------------------------------------------------


def test_zone_parses_every_yaml_form(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone.yaml"
    zone_file.write_text(
        "a.test: [127.0.0.1, '::1']\n"
        "nx.test: nxdomain\n"
        "inj.test: {kind: inject, addresses: [127.0.0.1], forged: [127.0.0.5], delay: 20ms}\n"
    )
    zone = Zone.load(zone_file)
    assert zone.behaviour(dns.name.from_text("A.TEST")) == Behaviour("answer", ("127.0.0.1", "::1"))
    assert zone.behaviour(dns.name.from_text("nx.test")).kind == "nxdomain"
    inject = zone.behaviour(dns.name.from_text("inj.test"))
    assert (inject.kind, inject.forged, inject.delay) == ("inject", ("127.0.0.5",), 0.02)
    assert zone.behaviour(dns.name.from_text("absent.test")).kind == "nxdomain"


@pytest.mark.parametrize(
    "spec",
    ["teapot", {"kind": "answer", "addresses": ["not-an-ip"]}, {"kind": "inject"}, 42],
)
def test_zone_rejects_bad_behaviours(spec: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Zone({"x.test": spec})


def test_lab_bogon_address_is_outside_the_exempt_range() -> None:
    # The bogon test relies on it: the agent must treat this loopback address as a bogon.
    assert ipaddress.ip_address(BOGON_ADDRESS) not in ipaddress.ip_network(BOGON_EXEMPT)


# --- DNS over UDP and TCP ---------------------------------------------------------------------

DNS_CASES = [
    ("valid.test", "A", NOERROR, [HOST]),
    ("VALID.test", "A", NOERROR, [HOST]),
    ("valid.test", "AAAA", NOERROR, []),
    ("nx.test", "A", NXDOMAIN, []),
    ("not-in-zone.test", "A", NXDOMAIN, []),
    ("nodata.test", "A", NOERROR, []),
    ("servfail.test", "A", dns.rcode.SERVFAIL, []),
    ("refused.test", "A", dns.rcode.REFUSED, []),
    ("bogon.test", "A", NOERROR, [BOGON_ADDRESS]),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(("name", "qtype", "rcode", "expected"), DNS_CASES)
async def test_dns_behaviours(
    lab: LoopbackLab, transport: str, name: str, qtype: str, rcode: int, expected: list[str]
) -> None:
    query = dns.message.make_query(name, qtype)
    send = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    response = await send(query, HOST, port=lab.dns.port, timeout=2)
    assert response.rcode() == rcode
    assert addresses(response) == expected
    assert response.flags & dns.flags.AA
    assert (transport, query.question[0].name.to_text(), qtype) in lab.dns.queries


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_silent_name_gets_no_reply(lab: LoopbackLab, transport: str) -> None:
    send = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    with pytest.raises(dns.exception.Timeout):
        await send(dns.message.make_query("silent.test", "A"), HOST, port=lab.dns.port, timeout=0.3)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.put_nowait(data)


async def test_dns_inject_sends_forged_then_genuine_reply_over_udp(lab: LoopbackLab) -> None:
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, remote_addr=(HOST, lab.dns.port)
    )
    try:
        query = dns.message.make_query("inject.test", "A")
        transport.sendto(query.to_wire())
        async with asyncio.timeout(2):
            first, second = [dns.message.from_wire(await collector.replies.get()) for _ in "12"]
    finally:
        transport.close()
    assert query.is_response(first)
    assert query.is_response(second)
    assert addresses(first) == [FORGED_ADDRESS]
    assert addresses(second) == [HOST]


async def test_dns_inject_gives_only_the_genuine_reply_over_tcp(lab: LoopbackLab) -> None:
    query = dns.message.make_query("inject.test", "A")
    response = await dns.asyncquery.tcp(query, HOST, port=lab.dns.port, timeout=2)
    assert addresses(response) == [HOST]


async def test_dns_tcp_answers_several_queries_on_one_connection(lab: LoopbackLab) -> None:
    reader, writer = await asyncio.open_connection(HOST, lab.dns.port)
    try:
        queries = [dns.message.make_query(n, "A") for n in ("valid.test", "nx.test")]
        writer.write(
            b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries))
        )
        async with asyncio.timeout(2):
            for query in queries:
                size = int.from_bytes(await reader.readexactly(2), "big")
                assert query.is_response(dns.message.from_wire(await reader.readexactly(size)))
    finally:
        writer.close()


def _mutate(wire: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(wire)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[: max(cut, 0) or len(data)])


# Garbage: random bytes, and valid queries with bytes overwritten or cut short (these get past
# the header and into the parser's deeper paths).
garbage = st.one_of(
    st.binary(max_size=600),
    st.builds(
        _mutate,
        st.sampled_from(
            [
                dns.message.make_query("valid.test", "A").to_wire(),
                dns.message.make_query("inject.test", "AAAA", use_edns=0).to_wire(),
            ]
        ),
        st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=6),
        st.integers(-10, 60),
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=garbage)
def test_dns_survives_garbage(
    session_lab: LoopbackLab, server_loop: BackgroundLoop, payload: bytes
) -> None:
    port = session_lab.dns.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(payload, (HOST, port))
    with socket.create_connection((HOST, port), timeout=2) as tcp:
        tcp.sendall(len(payload).to_bytes(2, "big") + payload)
        tcp.shutdown(socket.SHUT_WR)
        # The server answers what parses and then sees our EOF; either way it closes.
        while tcp.recv(4096):
            pass
    # Datagrams are handled in arrival order, so this answer comes after the garbage's.
    query = dns.message.make_query("valid.test", "A")
    assert addresses(dns.query.udp(query, HOST, port=port, timeout=2)) == [HOST]
    assert not server_loop.errors


# --- DoH --------------------------------------------------------------------------------------


@pytest.fixture
async def doh_session(lab: LoopbackLab) -> aiohttp.ClientSession:
    """An HTTPS client trusting the lab CA."""
    connector = aiohttp.TCPConnector(ssl=client_context(lab.pki.trusted))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def _doh(session: aiohttp.ClientSession, url: str, name: str, method: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    query.id = 0  # RFC 8484 asks for ID 0 so that GET responses cache well
    wire = query.to_wire()
    if method == "GET":
        param = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
        request = session.get(url, params={"dns": param})
    else:
        request = session.post(url, data=wire, headers={"content-type": DNS_MESSAGE})
    async with request as response:
        assert response.status == 200
        assert response.content_type == DNS_MESSAGE
        reply = dns.message.from_wire(await response.read())
    assert query.is_response(reply)
    return addresses(reply)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("name", "expected"),
    [("valid.test", [HOST]), ("confirmed.test", [CONTROL_ONLY_ADDRESS]), ("inject.test", [HOST])],
)
async def test_doh_answers_from_its_zone(
    lab: LoopbackLab, doh_session: aiohttp.ClientSession, method: str, name: str, expected: list
) -> None:
    assert await _doh(doh_session, lab.doh.url, name, method) == expected


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("GET", {}, 400),
        ("GET", {"params": {"dns": "!!!"}}, 400),
        (
            "POST",
            {"data": b"\x00\x01", "headers": {"content-type": "application/dns-message"}},
            400,
        ),
        ("POST", {"data": b"hello", "headers": {"content-type": "text/plain"}}, 415),
    ],
)
async def test_doh_rejects_bad_requests(
    lab: LoopbackLab, doh_session: aiohttp.ClientSession, method: str, kwargs: dict, status: int
) -> None:
    async with doh_session.request(method, lab.doh.url, **kwargs) as response:
        assert response.status == status


# --- HTTP -------------------------------------------------------------------------------------


@pytest.fixture
async def http_session(lab: LoopbackLab) -> aiohttp.ClientSession:
    """An HTTP(S) client trusting the lab CA; requests go to 127.0.0.1, never to a resolver."""
    connector = aiohttp.TCPConnector(ssl=client_context(lab.pki.trusted))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@pytest.mark.parametrize(
    ("role", "status", "marker"),
    [
        ("https", 200, VALID_BODY),
        ("http", 200, VALID_BODY),
        ("blockpage", 200, "rkn.gov.ru"),
        ("blockpage", 200, "Доступ ограничен"),
        ("status", 503, "503"),
    ],
)
async def test_http_modes(
    lab: LoopbackLab, http_session: aiohttp.ClientSession, role: str, status: int, marker: str
) -> None:
    async with http_session.get(lab.web[role].url()) as response:
        assert response.status == status
        assert marker in await response.text()


async def test_blockpage_body_is_the_published_one(
    lab: LoopbackLab, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(lab.web["blockpage"].url()) as response:
        assert await response.text() == BLOCKPAGE_BODY


async def test_redirect_stays_on_the_same_host(
    lab: LoopbackLab, http_session: aiohttp.ClientSession
) -> None:
    server = lab.web["redirect"]
    async with http_session.get(server.url(), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/final"
    async with http_session.get(server.url()) as response:
        assert (response.status, response.url.path) == (200, "/final")
        assert await response.text() == VALID_BODY
    assert ("GET", f"{HOST}:{server.port}", "/final") in server.requests


async def test_redirect_away_points_at_another_host(
    lab: LoopbackLab, http_session: aiohttp.ClientSession
) -> None:
    async with http_session.get(lab.web["redirect-away"].url(), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == ISP_REDIRECT


# --- TLS and raw TCP --------------------------------------------------------------------------


def _handshake(lab: LoopbackLab, role: str, server_name: str) -> ssl.SSLSocket:
    """A verifying TLS handshake to a lab server (blocking, small timeout)."""
    sock = socket.create_connection((HOST, lab.port(role)), timeout=0.5)
    try:
        return client_context(lab.pki.trusted).wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def test_tls_valid_certificate_verifies(lab: LoopbackLab) -> None:
    with _handshake(lab, "https", "valid.test") as tls:
        assert tls.version() is not None


@pytest.mark.parametrize(
    ("role", "server_name", "verify_code"),
    [
        ("wrongname", "wrongname.test", 62),  # X509_V_ERR_HOSTNAME_MISMATCH
        ("untrusted", "untrusted.test", 20),  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    ],
)
def test_tls_bad_certificates(lab: LoopbackLab, role: str, server_name: str, verify_code: int):
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        _handshake(lab, role, server_name)
    assert failure.value.verify_code == verify_code


@pytest.mark.parametrize(
    ("role", "error", "reason"),
    [
        ("reset", ConnectionResetError, None),
        ("eof", ssl.SSLEOFError, None),
        ("silent", TimeoutError, None),
        ("alert", ssl.SSLError, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ],
)
def test_raw_modes_break_the_tls_handshake(
    lab: LoopbackLab, role: str, error: type[Exception], reason: str | None
) -> None:
    with pytest.raises(error) as failure:
        _handshake(lab, role, "valid.test")
    if reason is not None:
        assert failure.value.reason == reason


@pytest.mark.parametrize(("role", "error"), [("reset", ConnectionResetError), ("eof", None)])
def test_raw_modes_break_plain_http(lab: LoopbackLab, role: str, error: type[Exception] | None):
    with socket.create_connection((HOST, lab.port(role)), timeout=1) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: valid.test\r\n\r\n")
        if error is None:
            assert sock.recv(100) == b""
        else:
            with pytest.raises(error):
                sock.recv(100)


def test_closed_port_refuses(lab: LoopbackLab) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, closed_port()), timeout=1).close()


def test_trap_counts_connections(lab: LoopbackLab, server_loop: BackgroundLoop) -> None:
    before = lab.trap.connections
    socket.create_connection((BOGON_ADDRESS, lab.trap.port), timeout=1).close()
    # The accept runs on the server loop: wait for it there, bounded.
    server_loop.run(asyncio.wait_for(lab.trap.wait_connections(before + 1), 2))
    assert lab.trap.connections == before + 1


# --- certificates -----------------------------------------------------------------------------


def test_pki_reuses_its_cas(tmp_path: Path) -> None:
    first, second = Pki(tmp_path), Pki(tmp_path)
    assert first.trusted.cert_pem.bytes() == second.trusted.cert_pem.bytes()
    assert first.untrusted.cert_pem.bytes() != first.trusted.cert_pem.bytes()


async def test_issued_files_serve_https_in_process(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.issue_files("web", "files.test", HOST)
    server = await HttpServer(
        "valid", HOST, ssl_context=server_context_from_files(cert, key)
    ).start()
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
            session.get(server.url()) as response,
        ):
            assert await response.text() == VALID_BODY
    finally:
        await server.close()


# --- command line -----------------------------------------------------------------------------


async def _start_cli(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start `python -m simlab ARGS` and return it with its ready line's last word."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simlab", *args, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT
    )
    try:
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode().split()
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert line[0] == "ready", line
    return proc, line[-1]


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.terminate()
    async with asyncio.timeout(5):
        return await proc.wait()


async def test_cli_dns(tmp_path: Path) -> None:
    zone = tmp_path / "zone.yaml"
    zone.write_text(yaml.safe_dump({"cli.test": ["127.0.0.7"], "gone.test": "nxdomain"}))
    proc, where = await _start_cli("dns", "--listen", f"{HOST}:0", "--zone", str(zone))
    host, port = parse_listen(where)
    try:
        query = dns.message.make_query("cli.test", "A")
        for send in (dns.asyncquery.udp, dns.asyncquery.tcp):
            assert addresses(await send(query, host, port=port, timeout=2)) == ["127.0.0.7"]
    finally:
        assert await _stop(proc) == 0


async def test_cli_certs_and_https_web(tmp_path: Path) -> None:
    certs = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simlab", "certs", "--dir", str(tmp_path),
        "--stem", "web", "--name", "cli.test", "--name", HOST, cwd=REPO_ROOT,
    )  # fmt: skip
    async with asyncio.timeout(20):
        assert await certs.wait() == 0
    proc, url = await _start_cli(
        "web", "--listen", f"{HOST}:0", "--mode", "blockpage",
        "--cert", str(tmp_path / "web.pem"), "--key", str(tmp_path / "web-key.pem"),
    )  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session,
            session.get(url) as response,
        ):
            assert "rkn.gov.ru" in await response.text()
    finally:
        assert await _stop(proc) == 0


async def test_cli_doh(tmp_path: Path) -> None:
    zone = tmp_path / "zone.yaml"
    zone.write_text(yaml.safe_dump({"cli.test": ["127.0.0.8"]}))
    pki = Pki(tmp_path)
    cert, key = pki.issue_files("doh", HOST)
    proc, url = await _start_cli(
        "doh", "--listen", f"{HOST}:0", "--zone", str(zone), "--cert", str(cert), "--key", str(key)
    )
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(pki.trusted))
        async with aiohttp.ClientSession(connector=connector) as session:
            assert await _doh(session, url, "cli.test", "POST") == ["127.0.0.8"]
    finally:
        assert await _stop(proc) == 0
