"""The QUIC step against real UDP servers on loopback: aioquic's HTTP/3 server with trustme
certificates, a port nothing listens on, and responders that are silent, send garbage or
offer no common version. Each case is a code of the taxonomy, with OONI's string."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from probes import quic
from probes.errors import QuicClosedError, classify
from probes.results import QuicFacts
from probes.taxonomy import Code, Step
from simlab.loopback import HOST, LoopbackLab
from tests.test_check_loopback import check_json

TIMEOUT = 1.0


def _trust(lab: LoopbackLab) -> quic.QuicTrust:
    return quic.make_trust(str(lab.pki.ca_file))


async def _probe(lab: LoopbackLab, port: int, name: str = "valid.test", **kw: float):
    request = quic.QuicRequest(name, f"{name}:{port}", "/page?x=1")
    return await quic.run(HOST, port, request, kw.get("trust") or _trust(lab), TIMEOUT)


async def test_a_handshake_and_get_to_a_real_http3_server_work(lab: LoopbackLab) -> None:
    server = lab.quic["https"]
    result = await _probe(lab, server.port)
    assert result.result == Code.OK, result.detail
    assert result.step == Step.QUIC
    assert result.address == f"{HOST}:{server.port}"
    assert isinstance(result.facts, QuicFacts)
    assert result.facts.alpn == "h3"
    assert result.facts.status == 200
    assert result.facts.body_bytes > 0
    assert (f"valid.test:{server.port}", "/page?x=1") in server.requests


async def test_a_name_the_certificate_does_not_cover_is_a_hostname_mismatch(
    lab: LoopbackLab,
) -> None:
    result = await _probe(lab, lab.quic["https"].port, name="wrongname.test")
    assert result.result == Code.QUIC_HOSTNAME_MISMATCH, result.detail
    assert result.ooni_failure == "ssl_invalid_hostname"
    assert "wrongname.test" in result.detail


async def test_an_untrusted_certificate_is_cert_invalid(lab: LoopbackLab) -> None:
    result = await _probe(lab, lab.quic["untrusted"].port, name="untrusted.test")
    assert result.result == Code.QUIC_CERT_INVALID, result.detail
    assert result.ooni_failure == "ssl_unknown_authority"


async def test_without_the_lab_ca_the_valid_certificate_is_not_trusted(lab: LoopbackLab) -> None:
    # The system store alone does not hold the lab's CA: validation really happens.
    result = await _probe(lab, lab.quic["https"].port, trust=quic.make_trust(None))
    assert result.result == Code.QUIC_CERT_INVALID, result.detail


async def test_nothing_listening_is_refused_through_icmp_port_unreachable(
    lab: LoopbackLab,
) -> None:
    start = time.perf_counter()
    result = await _probe(lab, lab.closed_udp_port)
    assert result.result == Code.QUIC_REFUSED, result.detail
    assert result.ooni_failure == "connection_refused"
    # An answer, not a timeout: the connected socket hears the ICMP error at once.
    assert time.perf_counter() - start < TIMEOUT / 2


async def test_a_silent_udp_listener_is_a_timeout_saying_nothing_came_back(
    lab: LoopbackLab,
) -> None:
    server = lab.quic["silent"]
    before = server.datagrams
    result = await _probe(lab, server.port)
    assert result.result == Code.QUIC_TIMEOUT, result.detail
    assert result.ooni_failure == "generic_timeout_error"
    assert "none received" in result.detail
    # The Initial was sent again while waiting (aioquic's probe timeouts), all unanswered.
    assert server.datagrams - before >= 2
    # It stops a little before the deadline (reading_until) to say what arrived.
    assert TIMEOUT - 0.2 <= result.duration_seconds <= TIMEOUT


async def test_a_garbage_responder_is_a_timeout_counting_what_came_back(
    lab: LoopbackLab,
) -> None:
    result = await _probe(lab, lab.quic["garbage"].port)
    assert result.result == Code.QUIC_TIMEOUT, result.detail
    assert "datagrams received, none completing it" in result.detail


async def test_a_version_negotiation_without_a_common_version_is_quic_version(
    lab: LoopbackLab,
) -> None:
    result = await _probe(lab, lab.quic["version"].port)
    assert result.result == Code.QUIC_VERSION, result.detail
    assert result.ooni_failure == "quic_incompatible_version"


def test_request_for_takes_the_sni_authority_and_path_from_the_url() -> None:
    request = quic.request_for(urlsplit("https://user@web.test:8443/a/b?c=d#frag"), max_body=10)
    assert request == quic.QuicRequest("web.test", "web.test:8443", "/a/b?c=d", 10)
    assert quic.request_for(urlsplit("https://web.test")).path == "/"


@pytest.mark.parametrize(
    ("error_code", "frame_type", "reason", "done", "code"),
    [
        (0x100 + 42, 6, "unable to get local issuer certificate", False, Code.QUIC_CERT_INVALID),
        (0x100 + 42, 6, "hostname 'a' doesn't match 'b'", False, Code.QUIC_HOSTNAME_MISMATCH),
        (0x100 + 45, 6, "Certificate is no longer valid", False, Code.QUIC_CERT_EXPIRED),
        (0x100 + 48, 6, "", False, Code.QUIC_CERT_INVALID),
        (0x100 + 112, 6, "", False, Code.QUIC_HOSTNAME_MISMATCH),
        (0x100 + 40, 6, "", False, Code.QUIC_ALERT),
        (0x100 + 120, 6, "no application protocol", False, Code.QUIC_ALERT),
        (0x2, 0, "", False, Code.QUIC_REFUSED),
        (0x1, 0, "Could not find a common protocol version", False, Code.QUIC_VERSION),
        (0xA, 0, "", False, Code.QUIC_ERROR),
        (0x1, 0, "Idle timeout", True, Code.QUIC_TIMEOUT),
        # An HTTP/3 application close (H3_REQUEST_REJECTED): its code is not an alert.
        (0x10B, None, "", True, Code.QUIC_ERROR),
    ],
)
def test_closes_are_classified_by_their_error_code(
    error_code: int, frame_type: int | None, reason: str, done: bool, code: Code
) -> None:
    found, detail = classify(Step.QUIC, QuicClosedError(error_code, frame_type, reason, done))
    assert found == code
    assert f"0x{error_code:x}" in detail


def test_a_stream_reset_is_quic_reset() -> None:
    code, _ = classify(Step.QUIC, ConnectionResetError("request stream reset (error 0x10c)"))
    assert code == Code.QUIC_RESET


def test_check_reports_http3_beside_the_chain(lab: LoopbackLab, write_config) -> None:
    """End to end through `check --format json`: a site that serves HTTP/3, one whose UDP is
    silent (reachable, with the HTTP/3-blocked note), and one whose certificate fails on both."""
    targets = [
        {"name": "h3-ok", "url": lab.url("https", "valid.test"), "http3": True},
        {"name": "h3-dropped", "url": lab.url("sni", "valid.test", "https"), "http3": True},
        {"name": "h3-untrusted", "url": lab.url("untrusted", "untrusted.test"), "http3": True},
        {"name": "no-h3", "url": lab.url("https", "valid.test")},
    ]
    exit_code, out = check_json(write_config(targets))
    by_name = {t["name"]: t for t in out["targets"]}

    def quic_step(name: str) -> dict:
        (step,) = [s for s in by_name[name]["steps"] if s["step"] == "quic"]
        return step

    assert by_name["h3-ok"]["verdict"] == "reachable"
    assert by_name["h3-ok"]["quic"] == {"result": "ok"}
    assert quic_step("h3-ok")["data"]["status"] == 200

    dropped = by_name["h3-dropped"]
    assert dropped["verdict"] == "reachable", dropped
    assert dropped["quic"]["result"] == "quic_timeout"
    assert "HTTP/3 blocked" in dropped["quic"]["note"]
    assert quic_step("h3-dropped")["ooni_failure"] == "generic_timeout_error"

    untrusted = by_name["h3-untrusted"]
    assert untrusted["verdict"] == "tls_blocking"
    assert untrusted["quic"] == {"result": "quic_cert_invalid"}, untrusted

    assert "quic" not in by_name["no-h3"]
    assert not [s for s in by_name["no-h3"]["steps"] if s["step"] == "quic"]
    assert exit_code == 1  # h3-untrusted is not reachable; QUIC alone never fails a check
