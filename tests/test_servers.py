"""Self-tests of the test servers: each behaves as it claims, checked with ordinary clients
(dnspython, ssl, aiohttp) over loopback."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import ssl
import struct
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

from agent.config import BlockpageConfig
from agent.planner import fingerprints
from probes.blockpages import BlockpageMatcher
from simlab.background import BackgroundLoop
from simlab.certs import Pki, client_context, server_context_from_files
from simlab.dns import start_dns
from simlab.intercept import PORTAL_BODY
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
from simlab.web import BLOCKPAGE_BODY, ISP_BODY, VALID_BODY, HttpServer
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
async def test_dns_serves_a_dual_stack_name_by_family_over_ipv6(transport: str) -> None:
    """A name with addresses of both families: A gets the IPv4 ones, AAAA the IPv6 ones, from
    a server listening on an IPv6 address (as the censorship lab's dual-stack hosts need)."""
    zone = Zone({"dual.test": ["192.0.2.1", "2001:db8::1", "2001:db8::2", "192.0.2.2"]})
    server = await start_dns(zone, "::1")
    send = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    try:
        answers = {
            qtype: await send(
                dns.message.make_query("dual.test", qtype), "::1", port=server.port, timeout=2
            )
            for qtype in ("A", "AAAA")
        }
    finally:
        await server.close()
    assert sorted(addresses(answers["A"])) == ["192.0.2.1", "192.0.2.2"]
    assert sorted(addresses(answers["AAAA"])) == ["2001:db8::1", "2001:db8::2"]


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


async def udp_replies(
    port: int, query: dns.message.Message, count: int
) -> list[dns.message.Message]:
    """Send `query` once over UDP and collect the first `count` datagrams that come back."""
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(_Collector, remote_addr=(HOST, port))
    try:
        transport.sendto(query.to_wire())
        async with asyncio.timeout(2):
            return [dns.message.from_wire(await collector.replies.get()) for _ in range(count)]
    finally:
        transport.close()


async def test_dns_inject_sends_forged_then_genuine_reply_over_udp(lab: LoopbackLab) -> None:
    query = dns.message.make_query("inject.test", "A")
    first, second = await udp_replies(lab.dns.port, query, 2)
    assert query.is_response(first)
    assert query.is_response(second)
    assert addresses(first) == [FORGED_ADDRESS]
    assert addresses(second) == [HOST]


async def test_dns_inject_gives_only_the_genuine_reply_over_tcp(lab: LoopbackLab) -> None:
    query = dns.message.make_query("inject.test", "A")
    response = await dns.asyncquery.tcp(query, HOST, port=lab.dns.port, timeout=2)
    assert addresses(response) == [HOST]


async def test_dns_stray_sends_wrong_id_and_wrong_name_before_the_genuine_reply(
    lab: LoopbackLab,
) -> None:
    query = dns.message.make_query("stray.test", "A")
    wrong_id, wrong_name, genuine = await udp_replies(lab.dns.port, query, 3)
    assert wrong_id.id != query.id
    assert wrong_id.question == query.question
    assert wrong_name.id == query.id
    assert wrong_name.question[0].name == dns.name.from_text("stray.stray.test")
    assert not query.is_response(wrong_id)
    assert not query.is_response(wrong_name)
    assert addresses(wrong_id) == addresses(wrong_name) == [FORGED_ADDRESS]
    assert query.is_response(genuine)
    assert addresses(genuine) == [HOST]
    # A stub resolver that skips replies to other questions gets the genuine answer.
    response = await dns.asyncquery.udp(
        query, HOST, port=lab.dns.port, timeout=2, ignore_errors=True
    )
    assert addresses(response) == [HOST]


async def test_dns_truncate_needs_tcp(lab: LoopbackLab) -> None:
    query = dns.message.make_query("truncate.test", "A")
    over_udp = await dns.asyncquery.udp(query, HOST, port=lab.dns.port, timeout=2)
    assert over_udp.flags & dns.flags.TC
    assert addresses(over_udp) == []
    over_tcp = await dns.asyncquery.tcp(query, HOST, port=lab.dns.port, timeout=2)
    assert not over_tcp.flags & dns.flags.TC
    assert addresses(over_tcp) == [HOST]


async def test_dns_nxdomain_hijack_answers_every_unknown_name() -> None:
    hijack = "127.0.0.9"
    zone = Zone({"known.test": [HOST], "gone.test": "nxdomain", "*": [hijack]})
    server = await start_dns(zone, HOST)
    try:
        for name, expected in (
            ("known.test", [HOST]),
            ("x7f3q9.nxprobe.test", [hijack]),
            ("gone.test", []),  # a name the zone says is gone stays gone
        ):
            query = dns.message.make_query(name, "A")
            response = await dns.asyncquery.udp(query, HOST, port=server.port, timeout=2)
            assert addresses(response) == expected, name
    finally:
        await server.close()


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
        ("isp", 200, "HomeNet"),
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


def test_isp_and_portal_pages_match_no_fingerprint_but_the_drip_head_does() -> None:
    """A hijack page is known only by differing from the real one: no fingerprint names it."""
    matcher = BlockpageMatcher(fingerprints([BlockpageConfig(name="lab", pattern=r"rkn\.gov")]))
    for page in (ISP_BODY, PORTAL_BODY):
        assert matcher.match("HTTP/1.1 200 OK", {}, page) is None
        assert page_title(page) != page_title(VALID_BODY)
        assert len(page) != len(VALID_BODY)
    assert matcher.match("HTTP/1.1 200 OK", {}, BLOCKPAGE_BODY[:-8]) is not None


def page_title(html: str) -> str:
    """The text of a page's <title>."""
    return html.split("<title>", 1)[1].split("</title>", 1)[0]


async def test_drip_sends_the_blockpage_head_then_a_byte_a_second(
    lab: LoopbackLab, http_session: aiohttp.ClientSession
) -> None:
    head = BLOCKPAGE_BODY.removesuffix("</html>\n").encode()
    async with http_session.get(lab.web["drip"].url()) as response:
        assert response.status == 200
        async with asyncio.timeout(1):
            assert await response.content.readexactly(len(head)) == head
        async with asyncio.timeout(2.5):
            assert len(await response.content.readexactly(2)) == 2
        assert not response.content.at_eof()


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
        ("http403", ssl.SSLError, "WRONG_VERSION_NUMBER"),
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


def test_http403_answers_a_client_hello_in_plain_text(lab: LoopbackLab) -> None:
    with socket.create_connection((HOST, lab.port("http403")), timeout=1) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        hello = client_context(lab.pki.trusted).wrap_bio(incoming, outgoing, False, "valid.test")
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        sock.sendall(outgoing.read())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert answer.endswith(b"Access denied</body></html>\n")


def test_closed_port_refuses(lab: LoopbackLab) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, closed_port()), timeout=1).close()


def test_trap_counts_connections(lab: LoopbackLab, server_loop: BackgroundLoop) -> None:
    before = lab.trap.connections
    socket.create_connection((BOGON_ADDRESS, lab.trap.port), timeout=1).close()
    # The accept runs on the server loop: wait for it there, bounded.
    server_loop.run(asyncio.wait_for(lab.trap.wait_connections(before + 1), 2))
    assert lab.trap.connections == before + 1


# --- fake Telegram DC -------------------------------------------------------------------------


def req_pq_multi(nonce: bytes) -> bytes:
    """An unencrypted req_pq_multi message, as MTProto's first message is written."""
    body = struct.pack("<I", 0xBE7E8EF1) + nonce
    return struct.pack("<qqi", 0, 0x5F00000000000000, len(body)) + body


def abridged(payload: bytes) -> bytes:
    return bytes([len(payload) // 4]) + payload


def intermediate(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


async def read_abridged(reader: asyncio.StreamReader) -> bytes:
    return await reader.readexactly((await reader.readexactly(1))[0] * 4)


async def read_intermediate(reader: asyncio.StreamReader) -> bytes:
    return await reader.readexactly(struct.unpack("<I", await reader.readexactly(4))[0])


TRANSPORTS = {
    "abridged": (b"\xef", abridged, read_abridged),
    "intermediate": (b"\xee\xee\xee\xee", intermediate, read_intermediate),
}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_mtproto_answers_req_pq_multi_with_res_pq(lab: LoopbackLab, transport: str) -> None:
    tag, frame, read = TRANSPORTS[transport]
    reader, writer = await asyncio.open_connection(HOST, lab.mtproto.port)
    try:
        server_nonces = set()
        for first in (True, False):  # two requests on one connection, each answered
            nonce = os.urandom(16)
            writer.write((tag if first else b"") + frame(req_pq_multi(nonce)))
            async with asyncio.timeout(2):
                reply = await read(reader)
            auth_key_id, message_id, length = struct.unpack_from("<qqi", reply)
            body = reply[20:]
            assert (auth_key_id, length, message_id % 4) == (0, len(body), 1)
            assert struct.unpack_from("<I", body)[0] == 0x05162463
            assert body[4:20] == nonce
            server_nonces.add(body[20:36])
            pq_length = body[36]
            assert pq_length == 8
            pq = int.from_bytes(body[37:45], "big")
            assert pq == 1229739323 * 1402015859
            vector, count, fingerprint = struct.unpack_from("<Iiq", body, 48)
            assert (vector, count, len(body)) == (0x1CB5C415, 1, 64)
            assert fingerprint != 0
        assert len(server_nonces) == 2
    finally:
        writer.close()


@pytest.mark.parametrize(
    "opening",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # another protocol
        b"\x16\x03\x01\x00\x05hello",  # a ClientHello
        b"\xef" + abridged(b"\x01" * 8 + req_pq_multi(b"n" * 16)[8:]),  # auth_key_id != 0
        b"\xee\xee\xee\xee" + intermediate(req_pq_multi(b"n" * 16)[:-4]),  # short
        b"\xee\xee\xee\xee\xff\xff\xff\x7f",  # a length no auth message has
    ],
)
def test_mtproto_closes_on_garbage(lab: LoopbackLab, opening: bytes) -> None:
    with socket.create_connection((HOST, lab.mtproto.port), timeout=2) as sock:
        sock.sendall(opening)
        assert sock.recv(100) == b""


# --- intercepting box -------------------------------------------------------------------------


def test_intercept_completes_tls_with_its_own_ca_for_any_name(lab: LoopbackLab) -> None:
    port = lab.intercept.port
    with (
        socket.create_connection((HOST, port), timeout=2) as sock,
        pytest.raises(ssl.SSLCertVerificationError) as failure,
    ):
        client_context(lab.pki.trusted).wrap_socket(sock, server_hostname="bank.example")
    assert failure.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    # With the box's CA trusted the handshake completes, for the very name asked.
    for name in ("bank.example", "web.telegram.test"):
        with (
            socket.create_connection((HOST, port), timeout=2) as sock,
            client_context(lab.intercept.ca).wrap_socket(sock, server_hostname=name) as tls,
        ):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(PORTAL_BODY.encode())


async def test_intercept_answers_plain_http_with_its_portal(lab: LoopbackLab) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{lab.intercept.port}/news") as response,
    ):
        assert response.status == 200
        assert await response.text() == PORTAL_BODY


def test_intercept_accepts_other_protocols_and_stays_silent(lab: LoopbackLab) -> None:
    with socket.create_connection((HOST, lab.intercept.port), timeout=0.5) as sock:
        sock.sendall(b"\xef" + abridged(req_pq_multi(os.urandom(16))))
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.sendall(b"more")  # still open: the box reads and says nothing
        with pytest.raises(TimeoutError):
            sock.recv(100)


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


@pytest.mark.parametrize("kind", ["mtproto", "intercept"])
async def test_cli_mtproto_and_intercept(kind: str) -> None:
    proc, where = await _start_cli(kind, "--listen", f"{HOST}:0")
    host, port = parse_listen(where)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\xee\xee\xee\xee" + intermediate(req_pq_multi(b"n" * 16)))
        async with asyncio.timeout(2):
            if kind == "mtproto":
                assert (await read_intermediate(reader))[24:40] == b"n" * 16
            else:  # the box says nothing to MTProto
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.5)
        writer.close()
    finally:
        assert await _stop(proc) == 0
